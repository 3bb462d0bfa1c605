//! `grove-bench attach` (issue 16): moving one large file through grove — grove-client's
//! upload (read the file, encrypt with grove-proto `attachment` one part ahead of the network,
//! PUT the parts over HTTP), stored through `object_store`; then download and
//! decrypt-and-verify — against, in the same run, a bare axum endpoint that
//! receives the same number of bytes into a file and serves them back, and the raw disk: the
//! same bytes written (and fsynced) to a file and read back.
//!
//! Both HTTP paths send the same part size sequentially over one keep-alive client, and write
//! to the same disk (`--dir`). The goal: grove at least 60 % of the bare transfer's rate in
//! both directions.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use futures_util::StreamExt;
use grove_proto::attachment::AttachmentDecryptor;
use tokio::io::AsyncWriteExt;

use crate::harness::{self, Env, User};

/// The client's plaintext source: this many random bytes, repeated.
const UNIT: usize = 1 << 20;

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64().max(1e-9)
}

/// Runs the three transfers of a `mib` MiB file once.
pub async fn run(env: &Env, mib: u64) -> Result<()> {
    ensure!((1..=4096).contains(&mib), "--mib is 1 to 4096");
    let size = mib << 20;
    let unit = harness::random_body(UNIT);
    let (grove_up, grove_down) = grove(env, &unit, size).await?;
    let (bare_up, bare_down) = bare(env, &unit, size).await?;
    let (disk_write, disk_read) = disk(env, &unit, size)?;
    println!("| path | up (MiB/s) | down (MiB/s) |");
    println!("|---|---:|---:|");
    println!("| grove (encrypt, HTTP parts, object_store; HTTP, decrypt+verify) | {grove_up:.0} | {grove_down:.0} |");
    println!("| bare axum (PUT into a file; GET from it) | {bare_up:.0} | {bare_down:.0} |");
    println!("| raw disk (write+fsync; read) | {disk_write:.0} | {disk_read:.0} |");
    println!(
        "grove / bare: up {:.0} %, down {:.0} % (goal: at least 60 % both ways)",
        100.0 * grove_up / bare_up,
        100.0 * grove_down / bare_down
    );
    Ok(())
}

/// The plaintext's bytes `[at, at + len)`: `unit` repeated.
fn plaintext(unit: &[u8], at: u64, len: usize, out: &mut Vec<u8>) {
    let mut pos = at;
    let end = at + len as u64;
    while pos < end {
        let i = (pos % unit.len() as u64) as usize;
        let n = (unit.len() - i).min((end - pos) as usize);
        out.extend_from_slice(&unit[i..i + n]);
        pos += n as u64;
    }
}

async fn grove(env: &Env, unit: &[u8], size: u64) -> Result<(f64, f64)> {
    let server = harness::start_server(env).await?;
    let client = harness::http_client()?;
    let alice = User::random();
    server.setup_room(&client, &alice, "files", &[]).await?;
    let key = server.server_key;

    // The file to send, written and synced before the clock starts (in the page cache, and no
    // dirty pages of it left for the disk to write back while the upload's parts are stored).
    let dir = tempfile::Builder::new().prefix("grove-bench-file-").tempdir_in(&env.dir)?;
    let file = dir.path().join("bench.bin");
    write_synced(&file, unit, size)?;

    // grove's own client: read, encrypt (one part ahead, on a blocking thread), PUT the parts.
    let grove = grove_client::Server::new(&server.base, alice.key.clone());
    let t0 = Instant::now();
    let pending = grove_client::files::begin_upload(&grove, "files", &file, "bench.bin").await?;
    let reference = grove_client::files::upload(
        &grove,
        "files",
        &file,
        &pending,
        "bench.bin".into(),
        "application/octet-stream".into(),
        &mut |_, _| {},
    )
    .await?;
    let up = t0.elapsed();
    let blob = reference.blob;

    // Download, decrypt and verify as the bytes arrive.
    let t1 = Instant::now();
    let path = format!("/v1/rooms/files/files/{blob}");
    let h = harness::sign(&alice, &key, "GET", &path, b"");
    let mut resp = harness::with_headers(client.get(format!("{}{path}", server.base)), &h).send().await?;
    ensure!(resp.status().as_u16() == 200, "download: {}", resp.status());
    let mut dec = AttachmentDecryptor::new(&reference)?;
    let mut out = Vec::with_capacity(UNIT + 64 * 1024);
    let mut plain_out = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        out.clear();
        dec.push(&chunk, &mut out)?;
        plain_out += out.len() as u64;
    }
    out.clear();
    dec.finish(&mut out)?;
    plain_out += out.len() as u64;
    ensure!(plain_out == size, "decrypted {plain_out} of {size} bytes");
    let down = t1.elapsed();
    server.stop().await;
    Ok((rate(size, up), rate(size, down)))
}

async fn bare(env: &Env, unit: &[u8], size: u64) -> Result<(f64, f64)> {
    let dir = tempfile::Builder::new().prefix("grove-bench-bare-").tempdir_in(&env.dir)?;
    let file = dir.path().join("blob");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let path = file.clone();
    let server = env.srv.spawn(async move {
        let app = axum::Router::new()
            .route(
                "/blob",
                put(|State(p): State<std::path::PathBuf>, body: Body| async move {
                    let mut f = tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&p)
                        .await
                        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                    let mut s = body.into_data_stream();
                    while let Some(c) = s.next().await {
                        let c = c.map_err(|_| StatusCode::BAD_REQUEST)?;
                        f.write_all(&c).await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                    }
                    f.sync_all().await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                    Ok::<_, StatusCode>(StatusCode::OK)
                })
                .get(|State(p): State<std::path::PathBuf>| async move {
                    let f = tokio::fs::File::open(&p).await.map_err(|_| StatusCode::NOT_FOUND)?;
                    Ok::<_, StatusCode>(Body::from_stream(tokio_util_stream(f)))
                }),
            )
            .with_state(path);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let _ = addr_tx.send(listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    let addr: std::net::SocketAddr = addr_rx.await.context("bare server")?;
    let client = harness::http_client()?;
    let url = format!("http://{addr}/blob");
    let part_len = grove_server::Config::default().files.part_bytes;
    let t0 = Instant::now();
    let mut at = 0u64;
    while at < size {
        let n = part_len.min(size - at) as usize;
        let mut part = Vec::with_capacity(n);
        plaintext(unit, at, n, &mut part);
        let resp = client.put(&url).body(part).send().await?;
        ensure!(resp.status().as_u16() == 200, "bare put: {}", resp.status());
        at += n as u64;
    }
    let up = t0.elapsed();
    let t1 = Instant::now();
    let mut resp = client.get(&url).send().await?;
    let mut got = 0u64;
    while let Some(c) = resp.chunk().await? {
        got += c.len() as u64;
    }
    let down = t1.elapsed();
    ensure!(got == size, "bare download: {got} of {size} bytes");
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok((rate(size, up), rate(size, down)))
}

/// A file as a stream of 64 KiB chunks.
fn tokio_util_stream(
    f: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// Writes `size` bytes of the plaintext into a new file at `path` in 1 MiB writes, and syncs it.
fn write_synced(path: &std::path::Path, unit: &[u8], size: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let mut at = 0u64;
    let mut buf = Vec::with_capacity(UNIT);
    while at < size {
        buf.clear();
        let n = UNIT.min((size - at) as usize);
        plaintext(unit, at, n, &mut buf);
        f.write_all(&buf)?;
        at += n as u64;
    }
    f.sync_all()?;
    Ok(())
}

fn disk(env: &Env, unit: &[u8], size: u64) -> Result<(f64, f64)> {
    use std::io::Read;
    let dir = tempfile::Builder::new().prefix("grove-bench-disk-").tempdir_in(&env.dir)?;
    let path = dir.path().join("blob");
    let t0 = Instant::now();
    write_synced(&path, unit, size)?;
    let write = t0.elapsed();
    let t1 = Instant::now();
    let mut f = std::fs::File::open(&path)?;
    let mut got = 0u64;
    let mut buf = vec![0u8; UNIT];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let read = t1.elapsed();
    if got != size {
        bail!("read back {got} of {size} bytes");
    }
    Ok((rate(size, write), rate(size, read)))
}
