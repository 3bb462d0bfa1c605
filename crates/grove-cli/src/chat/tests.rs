//! The chat's screen, drawn on ratatui's `TestBackend`, and its keys, without a terminal.

use std::collections::HashMap;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use grove_client::push::Link;
use grove_client::{Membership, Message, RoomStatus};
use grove_wire::api::RoomMode;
use grove_wire::content::Content;
use grove_wire::UserId;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{Action, App, RoomRow};
use super::view;
use super::worker::Cmd;

const ROOM: &str = "http://127.0.0.1:8080/rooms/garden";
/// 2026-12-07 12:00 UTC, and an hour and a day later.
const NOON: i64 = 1_796_644_800_000;

fn user(b: u8) -> UserId {
    UserId([b; 32])
}

fn text(seq: u64, who: UserId, ts: i64, content: Content) -> Message {
    Message::content(ROOM, seq, who, ts, content.encode())
}

/// Alice (me), Bob and Carol in "garden"; a reply, an edit, a deletion, reactions, an
/// unsupported kind, a removal; Bob's second room has 3 unread.
fn garden() -> App {
    let (alice, bob, carol) = (user(1), user(2), user(3));
    let mut app = App::new(alice);
    app.my_name = Some("Alice".into());
    app.names = HashMap::from([(bob, "Bob".to_string()), (carol, "Carol".to_string())]);
    app.members = vec![alice, bob, carol];
    app.rooms = vec![
        RoomRow {
            link: ROOM.into(),
            name: "garden".into(),
            mode: RoomMode::Mls,
            unread: 0,
            status: RoomStatus::Active,
            invited_by: None,
        },
        RoomRow {
            link: "http://127.0.0.1:8080/rooms/shed".into(),
            name: "shed".into(),
            mode: RoomMode::SenderKeys,
            unread: 3,
            status: RoomStatus::Active,
            invited_by: None,
        },
    ];
    let history = vec![
        Message::membership(ROOM, 1, alice, NOON, &Membership { added: vec![bob, carol], ..Membership::default() }),
        text(2, bob, NOON + 60_000, Content::text("the tomatoes are in")),
        text(3, alice, NOON + 120_000, Content::Reply { to: 2, text: "lovely, which kind?".into() }),
        text(4, bob, NOON + 180_000, Content::text("cherry, I thnik")),
        text(13, bob, NOON + 185_000, Content::text("an escape \u{1b}[2J in the middle")),
        text(5, bob, NOON + 190_000, Content::Edit { of: 4, text: "cherry, I think".into() }),
        text(6, carol, NOON + 200_000, Content::Reaction { to: 2, key: "🍅".into(), remove: false }),
        text(7, alice, NOON + 210_000, Content::Reaction { to: 2, key: "🍅".into(), remove: false }),
        text(8, carol, NOON + 220_000, Content::text("oops wrong room")),
        text(9, carol, NOON + 230_000, Content::Delete { of: 8 }),
        Message::content(ROOM, 10, carol, NOON + 240_000, br#"{"v":1,"type":"poll","question":"?"}"#.to_vec()),
        Message::undecryptable(ROOM, 11, bob, NOON + 250_000, "no key for this epoch"),
        Message::membership(
            ROOM,
            12,
            alice,
            NOON + 86_400_000,
            &Membership { removed: vec![carol], ..Membership::default() },
        ),
    ];
    app.lines = view::fold(&history);
    app.links.insert("http://127.0.0.1:8080".into(), Link::Live);
    app
}

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::render(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        let mut skip = 0;
        for x in 0..w {
            // The cell after a wide character (an emoji) is its second half.
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let symbol = buf[(x, y)].symbol();
            skip = unicode_width::UnicodeWidthStr::width(symbol).saturating_sub(1);
            line.push_str(symbol);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn clock(ts: i64) -> String {
    use chrono::TimeZone;
    chrono::Local.timestamp_millis_opt(ts).single().unwrap().format("%H:%M").to_string()
}

#[test]
fn a_room_with_names_replies_edits_reactions_and_unread_counts_on_a_wide_terminal() {
    let screen = draw(&garden(), 200, 30);
    // The room list: both rooms, their modes, the unread count.
    assert!(screen.contains("garden") && screen.contains(" mls"), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("shed ") && l.contains(" 3 sk")), "{screen}");
    // Names, not ids; the time; the reply's quote; the edit applied and marked.
    assert!(screen.contains(&format!("   2 {} Bob: the tomatoes are in", clock(NOON + 60_000))), "{screen}");
    assert!(screen.contains("↳ reply to #2 Bob: the tomatoes are in"), "{screen}");
    assert!(screen.contains("Alice: lovely, which kind?"), "{screen}");
    assert!(screen.contains("Bob: cherry, I think (edited)") && !screen.contains("thnik"), "{screen}");
    // Control characters from others never reach the terminal.
    assert!(screen.contains("an escape  [2J in the middle") && !screen.contains('\u{1b}'), "{screen}");
    // Two people reacted with the same key: counted once, 2.
    assert!(screen.contains("🍅 2"), "{screen}");
    // A deleted message, an unsupported kind, an unreadable entry, membership in words.
    assert!(screen.contains("Carol: (deleted)") && !screen.contains("oops"), "{screen}");
    assert!(screen.contains("a newer grove shows it"), "{screen}");
    assert!(screen.contains("! an unreadable message from Bob: no key for this epoch"), "{screen}");
    assert!(screen.contains("* you added Bob, you added Carol"), "{screen}");
    assert!(screen.contains("* you removed Carol"), "{screen}");
    // Day separators: the removal is a day later.
    assert!(screen.contains("── Monday 7 December 2026 ──"), "{screen}");
    assert!(screen.contains("── Tuesday 8 December 2026 ──"), "{screen}");
    // The members pane and the status line.
    assert!(screen.contains("members") && screen.contains("Alice (you)"), "{screen}");
    assert!(screen.lines().last().unwrap().is_empty() || screen.contains("● connected"), "{screen}");
    assert!(screen.contains("● connected · Alice"), "{screen}");
}

#[test]
fn a_small_terminal_keeps_the_conversation_and_the_input() {
    let mut app = garden();
    app.input.text = "hello".into();
    app.input.cursor = 5;
    let screen = draw(&app, 40, 12);
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines.len(), 12);
    // No panes at 40 columns: the title, the newest lines, the input, the status.
    assert!(lines[0].contains("garden · mls · 3 members"), "{screen}");
    assert!(!screen.contains(" rooms "), "{screen}");
    assert!(screen.contains("you removed Carol"), "{screen}");
    assert_eq!(lines[10], "> hello");
    assert!(lines[11].starts_with("● connected"), "{screen}");
    // Long lines wrap inside 40 columns.
    assert!(lines.iter().all(|l| unicode_width::UnicodeWidthStr::width(*l) <= 40));
}

#[test]
fn the_status_line_says_reconnecting_and_what_waits_in_the_outbox() {
    let mut app = garden();
    app.links.insert(
        "http://127.0.0.1:8080".into(),
        Link::Down { error: "connection refused".into(), retry_in: std::time::Duration::from_secs(4), attempt: 1 },
    );
    app.outbox = 2;
    app.pending = vec!["are you there?".into()];
    let screen = draw(&app, 120, 20);
    assert!(screen.contains("◌ reconnecting, trying again in 4s · 2 waiting to be sent · Alice"), "{screen}");
    assert!(screen.contains("http://127.0.0.1:8080: connection refused"), "{screen}");
    assert!(screen.contains("2 waiting to be sent"), "{screen}");
    assert!(screen.contains("Alice: are you there? (waiting to be sent)"), "{screen}");
}

fn typed(app: &mut App, s: &str) -> Vec<Action> {
    for c in s.chars() {
        app.on_event(Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)), 10);
    }
    app.on_event(Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)), 10)
}

#[test]
fn what_is_typed_becomes_a_message_or_a_command() {
    let mut app = garden();
    assert_eq!(
        typed(&mut app, "hi all"),
        vec![Action::Worker(Cmd::Send { link: ROOM.into(), content: Content::text("hi all") })]
    );
    assert_eq!(
        typed(&mut app, "//shrug"),
        vec![Action::Worker(Cmd::Send { link: ROOM.into(), content: Content::text("/shrug") })]
    );
    assert_eq!(
        typed(&mut app, "/reply 2 yes"),
        vec![Action::Worker(Cmd::Send { link: ROOM.into(), content: Content::Reply { to: 2, text: "yes".into() } })]
    );
    // Alice already reacted 🍅 to 2: the same reaction withdraws it.
    assert_eq!(
        typed(&mut app, "/react 2 🍅"),
        vec![Action::Worker(Cmd::Send {
            link: ROOM.into(),
            content: Content::Reaction { to: 2, key: "🍅".into(), remove: true }
        })]
    );
    // Only one's own messages are edited.
    assert_eq!(typed(&mut app, "/edit 2 mine now"), vec![]);
    assert!(app.notice.as_ref().is_some_and(|(n, err)| *err && n.contains("only your own")));
    assert_eq!(
        typed(&mut app, "/create shed2 --mode sender-keys"),
        vec![Action::Worker(Cmd::Create { name: "shed2".into(), mode: RoomMode::SenderKeys })]
    );
    assert_eq!(typed(&mut app, "/frobnicate"), vec![]);
    assert!(app.notice.as_ref().is_some_and(|(n, _)| n.contains("unknown command /frobnicate")));
    assert_eq!(typed(&mut app, "/quit"), vec![Action::Quit]);
    // Up recalls what was typed.
    app.on_event(Event::Key(KeyEvent::new(KeyCode::Up, KeyModifiers::NONE)), 10);
    assert_eq!(app.input.text, "/quit");
}

#[test]
fn tab_completes_a_member_name_and_switches_rooms_on_an_empty_line() {
    let mut app = garden();
    for c in "thanks ca".chars() {
        app.on_event(Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)), 10);
    }
    app.on_event(Event::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)), 10);
    assert_eq!(app.input.text, "thanks Carol ");
    app.input = Default::default();
    app.on_event(Event::Key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE)), 10);
    assert_eq!(app.room().unwrap().name, "shed");
    assert!(app.reload_wanted);
}

#[test]
fn an_invitation_waits_in_the_room_list_until_it_is_answered() {
    let mut app = garden();
    // Bob invited Alice to "shed": the list marks it, and the room says what to do.
    app.rooms[1].invited_by = Some(user(2));
    let screen = draw(&app, 120, 20);
    assert!(screen.lines().any(|l| l.starts_with("shed ") && l.contains(" invited sk")), "{screen}");
    // In garden, which Alice is in, /accept has nothing to answer.
    assert_eq!(typed(&mut app, "/accept"), vec![]);
    assert!(app.notice.as_ref().is_some_and(|(n, err)| *err && n.contains("no invitation waits")), "{:?}", app.notice);
    app.selected = 1;
    let screen = draw(&app, 120, 20);
    assert!(screen.contains("Bob invited you. /accept tells the room your name; /decline leaves it."), "{screen}");
    let shed = "http://127.0.0.1:8080/rooms/shed".to_string();
    assert_eq!(typed(&mut app, "/accept"), vec![Action::Worker(Cmd::Accept { link: shed.clone() })]);
    assert_eq!(typed(&mut app, "/decline"), vec![Action::Worker(Cmd::Decline { link: shed })]);
}

#[test]
fn the_rooms_name_and_topic_head_the_timeline_and_a_change_shows_in_it() {
    let mut app = garden();
    app.room_profile = grove_wire::content::RoomProfile { name: "Garden club".into(), topic: "Sundays".into() };
    let alice = app.me;
    let change = Content::RoomProfile(app.room_profile.clone());
    app.lines.extend(view::fold(&[text(9, alice, NOON, change)]));
    let screen = draw(&app, 100, 20);
    let first = screen.lines().next().unwrap_or_default();
    assert!(first.contains("garden · Garden club · Sundays · mls · 3 members"), "{screen}");
    assert!(screen.contains("you gave the room the name \"Garden club\""), "{screen}");
}
