//! `grove send --file` and `grove save`: files through grove-client, with a progress bar on
//! transfers that last.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use grove_client::profile::Profile;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// A transfer shows a bar once it has lasted this long (and only on a terminal).
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A progress bar on standard error that appears only when the transfer lasts longer than
/// [`SHOW_AFTER`] and standard error is a terminal.
struct Bar {
    label: String,
    started: Instant,
    terminal: bool,
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(label: String) -> Bar {
        Bar { label, started: Instant::now(), terminal: std::io::stderr().is_terminal(), bar: None }
    }

    fn update(&mut self, done: u64, total: u64) {
        if self.bar.is_none() && self.terminal && self.started.elapsed() >= SHOW_AFTER && done < total {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(self.label.clone());
            // The rate counts from here, not from the jump to where the transfer already is.
            bar.set_position(done);
            bar.reset_eta();
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `grove send ROOM --file PATH [--caption TEXT]`: answers the message's sequence number.
pub async fn send(p: &mut Profile, room: &str, path: &Path, caption: Option<&str>) -> anyhow::Result<u64> {
    let mut bar = Bar::new(format!("sending {}", grove_client::files::file_name_of(path)));
    let sent = p.send_file(room, path, caption, &mut |done, total| bar.update(done, total)).await;
    bar.finish();
    Ok(sent?)
}

/// `grove save ROOM SEQ [--out PATH] [--force]`: answers what was saved, as JSON.
pub async fn save(
    p: &mut Profile,
    room: &str,
    seq: u64,
    out: Option<&Path>,
    force: bool,
    json_out: bool,
) -> anyhow::Result<serde_json::Value> {
    let link = p.room(room)?.link;
    // The file's message may not be in this profile's history yet.
    if let Err(e) = p.sync_room(&link).await {
        eprintln!("grove: looking in what this profile holds: {e}");
    }
    let (file, caption) = p.attachment(&link, seq)?;
    let path = grove_client::files::output_path(out, &file.name);
    let mut bar = Bar::new(format!("saving {}", path.display()));
    let saved = p.save_file(&link, &file, &path, force, &mut |done, total| bar.update(done, total)).await;
    bar.finish();
    let size = saved.with_context(|| format!("saving entry {seq} of {room}"))?;
    if !json_out {
        // Said on standard error: standard output is the path alone.
        eprintln!(
            "saved {} ({}, {}){}",
            grove_client::files::safe_file_name(&file.name),
            crate::describe::size(size),
            file.media_type.escape_default(),
            caption.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
        );
    }
    Ok(
        json!({"path": path.display().to_string(), "name": file.name, "size": size, "media_type": file.media_type, "caption": caption}),
    )
}
