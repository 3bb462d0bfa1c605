//! `grove demo`: a private server on a free port in a temporary folder, three profiles, and the
//! whole story: create, invite, chat, remove, and the checks that matter.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use grove_client::profile::Profile;
use grove_client::RoomStatus;
use grove_wire::api::RoomMode;

pub fn run(mode: &str) -> anyhow::Result<()> {
    let mode = RoomMode::parse(mode).ok_or_else(|| anyhow!("--mode must be mls or sender-keys, not {mode:?}"))?;
    let tmp = tempfile::tempdir().context("cannot create a temporary folder")?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(story(tmp.path(), mode))
}

fn say(line: &str) {
    println!("{line}");
}

async fn story(tmp: &Path, mode: RoomMode) -> anyhow::Result<()> {
    let mut config = grove_server::Config::default();
    config.server.data_dir = tmp.join("server");
    let state = grove_server::open(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grove_server::run(listener, state, async move {
        let _ = stopped.await;
    }));
    say(&format!("== a private grove server at {url} (data in {})", tmp.join("server").display()));

    let profiles = tmp.join("profiles");
    let mut alice = Profile::init(&profiles.join("alice"), &url).await?;
    let mut bob = Profile::init(&profiles.join("bob"), &url).await?;
    let mut carol = Profile::init(&profiles.join("carol"), &url).await?;
    for (name, p) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        say(&format!("{name:>5} is {}", p.address()));
    }

    let room = alice.create_room_with_mode(&url, "garden", mode).await?;
    let kind = if mode == RoomMode::Mls { "MLS" } else { "Sender Keys" };
    say(&format!("\n== alice creates the {kind} room {}", room.link));
    alice.invite("garden", &bob.address().to_string()).await?;
    alice.invite("garden", &carol.address().to_string()).await?;
    bob.sync().await?;
    carol.sync().await?;
    say(&format!("alice invites bob and carol; they join: {} members", alice.members("garden")?.len()));

    let lines = [
        ("alice", "Hello Bob and Carol, welcome to the garden."),
        ("bob", "Hi Alice! The tomatoes are ripe."),
        ("carol", "Hello both. I'll bring a basket."),
    ];
    say("\n== they talk");
    for (who, text) in lines {
        let p = match who {
            "alice" => &mut alice,
            "bob" => &mut bob,
            _ => &mut carol,
        };
        p.send("garden", text).await?;
    }
    for p in [&mut alice, &mut bob, &mut carol] {
        p.sync().await?;
    }
    let texts = |p: &Profile| -> anyhow::Result<Vec<String>> {
        Ok(p.messages("garden", 0)?.into_iter().filter_map(|m| m.text()).collect())
    };
    for m in bob.messages("garden", 0)? {
        if let Some(text) = m.text() {
            say(&format!("  [{}] {}: {}", m.seq, m.sender.short(), text));
        }
    }
    for (name, p) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        if texts(p)?.len() != 3 {
            bail!("{name} does not see the three messages: {:?}", texts(p)?);
        }
    }
    let (epoch, auth) = alice.epoch("garden")?;
    if bob.epoch("garden")?.1 != auth || carol.epoch("garden")?.1 != auth {
        bail!("the members do not agree on the group state");
    }
    say(&format!("everyone sees all three, in the same order; all agree on epoch {epoch}"));

    // Keep a copy of Carol's state from before her removal.
    let carol_copy = profiles.join("carol-copy");
    copy_profile(&profiles.join("carol"), &carol_copy)?;

    say("\n== alice removes carol, then writes");
    alice.remove("garden", &carol.user_id()).await?;
    let secret = "Carol must not read this: the surprise party is on Friday.";
    let seq = alice.send("garden", secret).await?;
    bob.sync().await?;
    carol.sync().await?;
    if !texts(&bob)?.iter().any(|t| t == secret) {
        bail!("bob did not get alice's message");
    }
    say(&format!("bob reads: {secret:?}"));
    if carol.room("garden")?.status != RoomStatus::Removed || texts(&carol)?.iter().any(|t| t == secret) {
        bail!("carol was not shut out");
    }
    say("carol's client learns she was removed; the message never reaches her");
    let ciphertext = alice.raw_entry("garden", seq).await?;
    let mut old = Profile::open(&carol_copy)?;
    match old.decrypt_entry("garden", &ciphertext) {
        Ok(_) => bail!("carol's old state decrypted a message sent after her removal"),
        Err(e) => say(&format!("even with a copy of her old state, carol cannot decrypt it ({e})")),
    }
    match carol.send("garden", "am I still here?").await {
        Ok(_) => bail!("carol could still post"),
        Err(e) => say(&format!("carol cannot post: {e}")),
    }

    say("\n== what the server holds");
    let _ = stop.send(());
    server.await.map_err(|e| anyhow!("server task: {e}"))??;
    let mut found = Vec::new();
    let mut bytes_scanned = 0;
    for entry in std::fs::read_dir(tmp.join("server"))? {
        let path = entry?.path();
        let data = std::fs::read(&path)?;
        bytes_scanned += data.len();
        for (_, text) in lines.iter().chain([("alice", secret)].iter()) {
            if data.windows(text.len()).any(|w| w == text.as_bytes()) {
                found.push(format!("{text:?} in {}", path.display()));
            }
        }
    }
    if !found.is_empty() {
        bail!("plaintext found on the server: {found:?}");
    }
    say(&format!("scanned the server's files ({bytes_scanned} bytes): none of the messages is there in plaintext"));
    say("\ndemo complete");
    Ok(())
}

fn copy_profile(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}
