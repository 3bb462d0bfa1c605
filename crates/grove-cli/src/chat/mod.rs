//! `grove chat`: the interactive terminal client, on ratatui and crossterm.
//!
//! Three parts: the worker ([`worker`]) owns the profile and drives grove-client's room core
//! with the screen's commands and the push client's feed; the app ([`app`]) is the screen's
//! state and what keys do to it; the view ([`view`]) draws it. The screen reads the profile
//! through a second handle (reads take no lock), so it stays live while the worker waits on a
//! server; other `grove` processes on the same profile are seen the same way.

use std::io::Stdout;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, EventStream,
};
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use futures_util::StreamExt;
use grove_client::profile::Profile;

use crate::client::{open_with, Reach};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

mod app;
mod view;
mod worker;

#[cfg(test)]
mod tests;

use app::{Action, App};

/// Runs the chat until the user quits, on a terminal.
/// `link_joins_every`: how often the worker lets link requests in ([`worker::run`]).
pub fn run(
    dir: &Path,
    connect: &Reach,
    room: Option<String>,
    link_joins_every: std::time::Duration,
) -> anyhow::Result<()> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("grove chat needs a terminal; for scripts use `grove send` and `grove read --follow`");
    }
    let passphrase = crate::passphrase::current(dir)?;
    // The profile twice: the worker's and the screen's handle.
    let worker_profile = open_with(dir, connect, passphrase.as_ref())?;
    let mut reader = open_with(dir, connect, passphrase.as_ref())?;
    drop(passphrase);
    if let Some(key) = &room {
        reader.room(key)?;
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // The worker runs on this thread beside the screen (a profile is not shared between
    // threads); the push client's connections run on the runtime's threads.
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let worker = tokio::task::spawn_local(worker::run(worker_profile, cmd_rx, note_tx, link_joins_every));
        let mut app = App::new(reader.user_id());
        if let Some(key) = room {
            app.pending_show = Some(reader.room(&key)?.link);
        }
        let result = {
            let mut screen = Screen::enter()?;
            event_loop(&mut screen.terminal, &mut app, &mut reader, &cmd_tx, note_rx).await
        };
        // The worker finishes what it is doing (a message being posted stays in the outbox
        // if it cannot).
        drop(cmd_tx);
        let _ = tokio::time::timeout(Duration::from_secs(3), worker).await;
        result
    })
}

/// The terminal in raw mode on the alternate screen, restored when dropped, on a panic too.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let mut out = std::io::stdout();
        crossterm::execute!(out, EnterAlternateScreen, EnableMouseCapture, EnableBracketedPaste)?;
        let terminal = Terminal::new(CrosstermBackend::new(out))?;
        Ok(Screen { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
        let _ = self.terminal.show_cursor();
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

async fn event_loop<B: ratatui::backend::Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    reader: &mut Profile,
    cmds: &mpsc::UnboundedSender<worker::Cmd>,
    mut notes: mpsc::UnboundedReceiver<worker::Note>,
) -> anyhow::Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let mut events = EventStream::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    if let Some(cmd) = app.load(reader)? {
        let _ = cmds.send(cmd);
    }
    loop {
        terminal.draw(|f| view::render(f, app))?;
        // The timeline's height: the screen less its title, input and status rows.
        let rows = usize::from(terminal.size()?.height.saturating_sub(3));
        let mut reload = false;
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    for action in app.on_event(ev, rows) {
                        match action {
                            Action::Quit => return Ok(()),
                            Action::Worker(cmd) => {
                                let _ = cmds.send(cmd);
                            }
                        }
                    }
                    reload = app.reload_wanted;
                }
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => return Ok(()),
            },
            Some(note) = notes.recv() => {
                reload = app.on_note(note);
                while let Ok(note) = notes.try_recv() {
                    reload |= app.on_note(note);
                }
            }
            _ = tick.tick() => {}
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        }
        if reload {
            if let Some(cmd) = app.load(reader)? {
                let _ = cmds.send(cmd);
            }
        }
    }
}
