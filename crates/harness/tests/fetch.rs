//! `harness fetch`, `verify` and `manifest` against a real HTTP server on loopback (started in
//! this process, stopped when the test ends): resumed and restarted downloads, retries, mirrors,
//! offline mode, digest mismatches, unsafe archives, concurrent fetches, and weights that load
//! through `harness suite --dry-run` afterwards. Also checks every shipped manifest against its
//! suite file and the unpinned allow-list.

mod common;
// The real all-MiniLM-L6-v2 files, in this test binary to spare CI a link of the whole stack.
#[path = "fetch_cases/minilm.rs"]
mod minilm;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{harness, run, text};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- loopback server

/// A fault the server injects into the next request for a path.
#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this status and no body.
    Status(u16),
    /// 429 with `Retry-After: 0`.
    TooManyRequests,
    /// Announce the whole length, send this many bytes, close.
    CutAfter(usize),
    /// Answer 200 with the whole file even when a range was asked.
    IgnoreRange,
}

struct Route {
    body: Vec<u8>,
    faults: VecDeque<Fault>,
    delay: Duration,
}

/// A tiny HTTP/1.1 server: GET with `Range: bytes=N-`, ETag and the hub's headers, injected
/// faults. It accepts until dropped or for at most a minute, whichever comes first.
struct Server {
    base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    /// The most connections served at the same time.
    peak: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (r, l, s, p) = (routes.clone(), log.clone(), stop.clone(), peak.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, l, p, n) = (r.clone(), l.clone(), p.clone(), in_flight.clone());
                        std::thread::spawn(move || {
                            p.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                            serve(stream, &r, &l);
                            n.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            base,
            routes,
            log,
            stop,
            peak,
        }
    }

    fn add(&self, path: &str, body: &[u8], faults: Vec<Fault>) {
        self.routes.lock().unwrap().insert(
            path.to_string(),
            Route {
                body: body.to_vec(),
                faults: faults.into(),
                delay: Duration::ZERO,
            },
        );
    }

    fn slow(&self, path: &str, delay: Duration) {
        self.routes.lock().unwrap().get_mut(path).unwrap().delay = delay;
    }

    /// `GET <path> [range]` per request received.
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, log: &Mutex<Vec<String>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut range_start = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range_start = v
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
            }
        }
    }
    let (body, fault, delay) = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&path) {
            Some(route) => (
                Some(route.body.clone()),
                route.faults.pop_front(),
                route.delay,
            ),
            None => (None, None, Duration::ZERO),
        }
    };
    log.lock().unwrap().push(match range_start {
        Some(s) => format!("GET {path} bytes={s}-"),
        None => format!("GET {path}"),
    });
    std::thread::sleep(delay);
    let mut out = stream;
    let status = |out: &mut TcpStream, code: u16| {
        let _ = write!(
            out,
            "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let Some(body) = body else {
        return status(&mut out, 404);
    };
    let etag = format!("\"{}\"", hex(&Sha256::digest(&body)));
    let (code, start) = match (&fault, range_start) {
        (Some(Fault::Status(code)), _) => return status(&mut out, *code),
        (Some(Fault::TooManyRequests), _) => {
            let _ = write!(
                out,
                "HTTP/1.1 429 X\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        (Some(Fault::IgnoreRange), _) | (_, None) => (200, 0),
        (_, Some(s)) if s < body.len() => (206, s),
        (_, Some(_)) => return status(&mut out, 416),
    };
    let part = &body[start..];
    let mut head = format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nETag: {etag}\r\nX-Linked-Etag: {etag}\r\n\
         X-Repo-Commit: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        part.len(),
        COMMIT
    );
    if code == 206 {
        head += &format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        );
    }
    head += "\r\n";
    let _ = out.write_all(head.as_bytes());
    let sent = match fault {
        Some(Fault::CutAfter(n)) => &part[..n.min(part.len())],
        _ => part,
    };
    let _ = out.write_all(sent);
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Both);
}

// ---------------------------------------------------------------- fixtures

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes that differ at every position, so a shifted or flipped byte changes the digest.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A suite `mini` (NOAH layout, one task `t1`, the embedded demo backbone) and a manifests
/// folder whose single artifact `mini-data` has `files` (TOML `[[files]]` tables) and `sources`.
fn write_fixture(dir: &Path, sources: &str, files: &str, splits: &str) {
    std::fs::create_dir_all(dir.join("suites")).unwrap();
    std::fs::create_dir_all(dir.join("manifests/artifacts")).unwrap();
    std::fs::write(
        dir.join("suites/mini.yaml"),
        "name: mini\ndescription: test\nbackbone: { checkpoint: demo }\ndata: { format: noah }\n\
         preprocess: { image_size: 32, interpolation: bilinear, normalization: none }\n\
         protocol: { train_split: train800, eval_split: test, val_split: null, selection: final, on_data_error: stop }\n\
         recipe: { epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0 }\nseeds: [0]\naveraging: [mean]\n\
         tasks:\n  - { name: t1, num_classes: 2 }\nmethods:\n  - method: linear\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/mini.toml"),
        "suite = \"mini\"\nartifacts = [\"mini-data\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("manifests/artifacts/mini-data.toml"),
        format!(
            "id = \"mini-data\"\nkind = \"data\"\ntitle = \"t\"\nlicence = \"l\"\ncitation = \"c\"\n\
             install = \".\"\nprovides = [\"t1\"]\n{sources}\n{files}\n{splits}"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("manifests/unpinned.txt"), "").unwrap();
}

/// The usual fixture: one data file `t1/test.txt` pinned to `pinned`'s size and digest, its only
/// source the server's `/d/` folder.
fn pin_one_file(dir: &Path, server: &Server, pinned: &[u8]) {
    write_fixture(
        dir,
        &url_source(&format!("{}/d", server.base)),
        &file_entry("t1/test.txt", pinned),
        "",
    );
}

fn url_source(base: &str) -> String {
    format!("[[sources]]\nkind = \"url\"\nbase = \"{base}\"\n")
}

fn file_entry(path: &str, bytes: &[u8]) -> String {
    format!(
        "[[files]]\npath = \"{path}\"\nsize = {}\nsha256 = \"{}\"\n",
        bytes.len(),
        sha256(bytes)
    )
}

/// `harness fetch mini` over the network (the common helper sets offline mode).
fn fetch_cmd(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = harness(dir);
    cmd.env_remove("HF_HUB_OFFLINE")
        .args([
            "fetch",
            "mini",
            "--suites-dir",
            "suites",
            "--manifests",
            "manifests",
            "--data-dir",
            "data",
        ])
        .args(["--retry-delay-ms", "1"])
        .args(extra);
    cmd
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

// ---------------------------------------------------------------- downloads

#[test]
fn a_cut_download_resumes_with_a_range_and_ends_verified() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(200_000);
    server.add("/d/t1/test.txt", &body, vec![Fault::CutAfter(50_000)]);
    pin_one_file(dir.path(), &server, &body);
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        body
    );
    assert_eq!(
        server.requests(),
        vec![
            "GET /d/t1/test.txt".to_string(),
            "GET /d/t1/test.txt bytes=50000-".to_string()
        ]
    );
    let receipt =
        std::fs::read_to_string(dir.path().join("data/.peftbench/receipts/mini-data.json"))
            .unwrap();
    assert!(receipt.contains(&sha256(&body)), "{receipt}");
}

#[test]
fn a_flipped_byte_in_a_resumed_part_is_caught_and_the_file_refetched() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(100_000);
    server.add("/d/t1/test.txt", &body, vec![]);
    pin_one_file(dir.path(), &server, &body);
    let mut part = body[..40_000].to_vec();
    part[1234] ^= 0x01;
    std::fs::create_dir_all(dir.path().join("data/t1")).unwrap();
    std::fs::write(dir.path().join("data/t1/test.txt.part"), &part).unwrap();
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("differs from the pinned"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        body
    );
    assert!(dir.path().join("data/t1/test.txt.part.bad").is_file());
    assert_eq!(
        server.requests(),
        vec![
            "GET /d/t1/test.txt bytes=40000-".to_string(),
            "GET /d/t1/test.txt".to_string()
        ]
    );
}

#[test]
fn a_200_to_a_range_request_restarts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(60_000);
    server.add("/d/t1/test.txt", &body, vec![Fault::IgnoreRange]);
    pin_one_file(dir.path(), &server, &body);
    std::fs::create_dir_all(dir.path().join("data/t1")).unwrap();
    std::fs::write(dir.path().join("data/t1/test.txt.part"), &body[..10_000]).unwrap();
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("starting over"), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        body
    );
}

#[test]
fn a_changed_etag_restarts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(30_000);
    server.add("/d/t1/test.txt", &body, vec![]);
    pin_one_file(dir.path(), &server, &body);
    std::fs::create_dir_all(dir.path().join("data/t1")).unwrap();
    std::fs::write(dir.path().join("data/t1/test.txt.part"), &body[..10_000]).unwrap();
    std::fs::write(
        dir.path().join("data/t1/test.txt.part.etag"),
        "\"an older copy\"",
    )
    .unwrap();
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("ETag changed"), "{}", text(&out));
    assert_eq!(
        server.requests(),
        vec![
            "GET /d/t1/test.txt bytes=10000-".to_string(),
            "GET /d/t1/test.txt".to_string()
        ]
    );
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        body
    );
}

#[test]
fn a_404_moves_on_to_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(5_000);
    server.add("/mirror/t1/test.txt", &body, vec![]);
    let sources = url_source(&format!("{}/gone", server.base))
        + &url_source(&format!("{}/mirror", server.base));
    write_fixture(dir.path(), &sources, &file_entry("t1/test.txt", &body), "");
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        server.requests(),
        vec![
            "GET /gone/t1/test.txt".to_string(),
            "GET /mirror/t1/test.txt".to_string()
        ]
    );
    assert!(text(&out).contains("/mirror/t1/test.txt"), "{}", text(&out));
}

#[test]
fn two_5xx_and_a_429_are_retried_then_the_file_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(5_000);
    server.add(
        "/d/t1/test.txt",
        &body,
        vec![
            Fault::Status(500),
            Fault::Status(503),
            Fault::TooManyRequests,
        ],
    );
    pin_one_file(dir.path(), &server, &body);
    let out = run(&mut fetch_cmd(dir.path(), &["--json"]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(server.requests().len(), 4);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events
        .iter()
        .any(|e| e["event"] == "note" && e["message"].as_str().unwrap().contains("HTTP 500")));
    assert_eq!(events.last().unwrap()["exit_code"], 0);
}

#[test]
fn offline_exits_3_without_opening_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(5_000);
    server.add("/d/t1/test.txt", &body, vec![]);
    pin_one_file(dir.path(), &server, &body);
    let mut cmd = fetch_cmd(dir.path(), &[]);
    cmd.env("HF_HUB_OFFLINE", "1");
    let out = run(&mut cmd);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("offline"), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(50));
    assert!(server.requests().is_empty());
}

#[test]
fn a_mismatch_exits_1_and_leaves_the_destination_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let pinned = payload(8_000);
    let mut served = pinned.clone();
    served[100] ^= 0xff;
    server.add("/d/t1/test.txt", &served, vec![]);
    pin_one_file(dir.path(), &server, &pinned);
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(!dir.path().join("data/t1/test.txt").exists());
    assert!(dir.path().join("data/t1/test.txt.part.bad").is_file());

    // A different file already in place is reported, never overwritten.
    std::fs::write(dir.path().join("data/t1/test.txt"), &served).unwrap();
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("left untouched"), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        served
    );
}

/// A zip of stored entries (what the fetch crate's reader must unpack).
fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(0u16.to_le_bytes()); // stored
            h.extend(0u32.to_le_bytes()); // time, date
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                h.extend([0u8; 6]); // comment length, disk, internal attributes
                h.extend(0u32.to_le_bytes()); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend(*data);
        central.extend(header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn zip_entry(path: &str, bytes: &[u8]) -> String {
    file_entry(path, bytes) + "unpack = \"zip\"\nstrip = 1\n"
}

#[test]
fn a_zip_unpacks_into_place_and_verifies_its_split_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let list = b"images/test/000000.jpg 0\nimages/test/000001.jpg 1\n";
    let zip = stored_zip(&[
        ("bundle/t1/test.txt", list),
        ("bundle/t1/images/test/000000.jpg", b"jpeg0"),
        ("bundle/t1/images/test/000001.jpg", b"jpeg1"),
    ]);
    server.add("/d/bundle.zip", &zip, vec![]);
    let splits =
        "[[splits]]\nfile = \"t1/test.txt\"\nexamples = 2\ncount = \"noah-list\"\ntask = \"t1\"\n";
    write_fixture(
        dir.path(),
        &url_source(&format!("{}/d", server.base)),
        &zip_entry("bundle.zip", &zip),
        splits,
    );
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        list
    );
    assert!(!dir
        .path()
        .join("data/.peftbench/downloads/mini-data/bundle.zip")
        .exists());

    let verify = |dir: &Path| {
        run(harness(dir).args([
            "verify",
            "mini",
            "--suites-dir",
            "suites",
            "--manifests",
            "manifests",
            "--data-dir",
            "data",
        ]))
    };
    let out = verify(dir.path());
    assert_eq!(code(&out), 0, "{}", text(&out));
    // A label outside num_classes (2) is a mismatch; a missing image is incomplete.
    std::fs::write(
        dir.path().join("data/t1/test.txt"),
        "images/test/000000.jpg 0\nimages/test/000001.jpg 5\n",
    )
    .unwrap();
    let out = verify(dir.path());
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("num_classes 2"), "{}", text(&out));
    std::fs::remove_file(dir.path().join("data/t1/images/test/000001.jpg")).unwrap();
    std::fs::write(dir.path().join("data/t1/test.txt"), list).unwrap();
    let out = verify(dir.path());
    assert_eq!(code(&out), 3, "{}", text(&out));
}

#[test]
fn a_zip_entry_with_dotdot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let zip = stored_zip(&[
        ("bundle/t1/ok.txt", b"ok"),
        ("bundle/../../evil.txt", b"evil"),
    ]);
    server.add("/d/bundle.zip", &zip, vec![]);
    write_fixture(
        dir.path(),
        &url_source(&format!("{}/d", server.base)),
        &zip_entry("bundle.zip", &zip),
        "",
    );
    let out = run(&mut fetch_cmd(dir.path(), &[]));
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("refused"), "{}", text(&out));
    assert!(!dir.path().join("evil.txt").exists() && !dir.path().join("data/evil.txt").exists());
    assert!(
        !dir.path().join("data/t1").exists(),
        "nothing of a refused archive is installed"
    );
}

#[test]
fn two_concurrent_fetches_do_not_corrupt_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let body = payload(50_000);
    server.add("/d/t1/test.txt", &body, vec![]);
    server.slow("/d/t1/test.txt", Duration::from_millis(300));
    pin_one_file(dir.path(), &server, &body);
    let first = fetch_cmd(dir.path(), &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let second = run(&mut fetch_cmd(dir.path(), &[]));
    let first = first.wait_with_output().unwrap();
    assert_eq!(code(&first), 0, "{}", text(&first));
    // The second either waited for nothing (the first had finished) or refused, naming the pid.
    match code(&second) {
        0 => {}
        2 => assert!(text(&second).contains("pid"), "{}", text(&second)),
        other => panic!("exit {other}: {}", text(&second)),
    }
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        body
    );
}

/// Six slow files fetched with `--jobs N`: the server never sees more than N at once, sees more
/// than one when N allows it, and every file arrives (one JSON `done` event each).
fn fetch_six_slow_files(jobs: &str) -> (usize, Output) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    let mut files = String::new();
    let mut bodies = Vec::new();
    for i in 0..6 {
        let path = format!("t1/f{i}.bin");
        let body = payload(20_000 + i);
        server.add(&format!("/d/{path}"), &body, vec![]);
        server.slow(&format!("/d/{path}"), Duration::from_millis(300));
        files += &file_entry(&path, &body);
        bodies.push((path, body));
    }
    write_fixture(
        dir.path(),
        &url_source(&format!("{}/d", server.base)),
        &files,
        "",
    );
    let out = run(&mut fetch_cmd(dir.path(), &["--jobs", jobs, "--json"]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    for (path, body) in &bodies {
        assert_eq!(
            &std::fs::read(dir.path().join("data").join(path)).unwrap(),
            body
        );
    }
    let done = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""event":"done""#) && l.contains(r#""state":"installed""#))
        .count();
    assert_eq!(done, 6, "{}", text(&out));
    (server.peak.load(Ordering::SeqCst), out)
}

#[test]
fn jobs_bounds_the_files_in_flight() {
    let (peak, out) = fetch_six_slow_files("2");
    assert_eq!(peak, 2, "--jobs 2 saw {peak} at once: {}", text(&out));
    let (peak, out) = fetch_six_slow_files("6");
    assert!(peak > 2, "--jobs 6 saw only {peak} at once: {}", text(&out));
}

#[test]
fn from_a_folder_installs_files_matched_by_digest_without_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let body = payload(3_000);
    write_fixture(
        dir.path(),
        &url_source("http://127.0.0.1:9"),
        &file_entry("t1/test.txt", &body),
        "",
    );
    std::fs::create_dir_all(dir.path().join("copied/deep")).unwrap();
    std::fs::write(dir.path().join("copied/deep/renamed.txt"), &body).unwrap();
    std::fs::write(dir.path().join("copied/test.txt"), payload(2_999)).unwrap();
    let out = run(&mut fetch_cmd(dir.path(), &["--from", "copied"]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.path().join("data/t1/test.txt")).unwrap(),
        body
    );
}

// ---------------------------------------------------------------- weights

#[test]
fn fetched_weights_load_through_suite_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start();
    let config = br#"{"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "image_size": 32, "patch_size": 8, "num_channels": 3}"#;
    // A valid, empty safetensors file: an 8-byte header length and the header `{}` padded.
    let mut weights = 8u64.to_le_bytes().to_vec();
    weights.extend(b"{}      ");
    let git_sha1 = git_blob_sha1(config);
    server.add(
        &format!("/testorg/tiny-vit/resolve/{COMMIT}/config.json"),
        config,
        vec![],
    );
    server.add(
        &format!("/testorg/tiny-vit/resolve/{COMMIT}/model.safetensors"),
        &weights,
        vec![],
    );
    std::fs::create_dir_all(d.join("suites")).unwrap();
    std::fs::create_dir_all(d.join("manifests/artifacts")).unwrap();
    std::fs::write(
        d.join("suites/tiny.yaml"),
        "name: tiny\ndescription: test\nbackbone: { checkpoint: old-tiny-vit }\n\
         data: { format: generated, image_size: 32, train_examples: 8, eval_examples: 8 }\n\
         preprocess: { image_size: 32, interpolation: bilinear, normalization: none }\n\
         protocol: { train_split: train, eval_split: test, val_split: null, selection: final, on_data_error: stop }\n\
         recipe: { epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0 }\nseeds: [0]\naveraging: [mean]\n\
         tasks:\n  - { name: position, num_classes: 9, generator: position }\n\
         methods:\n  - method: lora\n    params: { r: 4, alpha: 4, dropout: 0.0, target_modules: [query, value], use_rslora: false }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("manifests/tiny.toml"),
        "suite = \"tiny\"\nartifacts = [\"tiny-vit\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("manifests/artifacts/tiny-vit.toml"),
        format!(
            "id = \"tiny-vit\"\nkind = \"weights\"\ntitle = \"t\"\nlicence = \"l\"\ncitation = \"c\"\n\
             repo = \"testorg/tiny-vit\"\naliases = [\"old-tiny-vit\"]\n\
             [[sources]]\nkind = \"hub\"\nrepo = \"testorg/tiny-vit\"\nrevision = \"{COMMIT}\"\n\
             [[files]]\npath = \"config.json\"\nsize = {}\ngit_sha1 = \"{git_sha1}\"\n{}",
            config.len(),
            file_entry("model.safetensors", &weights)
        ),
    )
    .unwrap();
    std::fs::write(d.join("manifests/unpinned.txt"), "").unwrap();
    let dry_run =
        |d: &Path| run(harness(d).args(["suite", "tiny", "--dry-run", "--suites-dir", "suites"]));
    let before = dry_run(d);
    assert!(
        text(&before).contains("were not checked"),
        "{}",
        text(&before)
    );

    let mut cmd = harness(d);
    cmd.env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &server.base)
        .args([
            "fetch",
            "tiny",
            "--suites-dir",
            "suites",
            "--manifests",
            "manifests",
        ]);
    let out = run(&mut cmd);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let repo = d.join("cache/hub/models--testorg--tiny-vit");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(
        std::fs::read(repo.join(format!("snapshots/{COMMIT}/config.json"))).unwrap(),
        config
    );
    assert!(repo.join(format!("blobs/{git_sha1}")).is_file());

    let after = dry_run(d);
    assert!(after.status.success(), "{}", text(&after));
    assert!(
        !text(&after).contains("were not checked"),
        "{}",
        text(&after)
    );
    let verify = run(harness(d).args([
        "verify",
        "tiny",
        "--suites-dir",
        "suites",
        "--manifests",
        "manifests",
    ]));
    assert_eq!(code(&verify), 0, "{}", text(&verify));
}

/// Git's blob id (`blob <len>\0` + content), as the hub reports small files.
fn git_blob_sha1(content: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", content.len()));
    hasher.update(content);
    hex(&hasher.finalize())
}

// ---------------------------------------------------------------- manifests

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_manifest_loads_covers_its_suite_and_the_unpinned_list_is_exact() {
    let root = repo_root();
    let out = run(harness(&root).args(["manifest", "check"]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    for suite in [
        "vtab1k",
        "fgvc",
        "ast",
        "ast-speech-commands",
        "ast-fsc",
        "ast-urbansound8k",
        "lowres",
        "lowres-ner",
        "xling-rerank",
    ] {
        assert!(
            text(&out).contains(&format!("ok  {suite}\n")),
            "{suite}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_stale_allow_list_fails_the_check_and_pin_fills_entries_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = payload(1_000);
    let unpinned =
        "[[files]]\npath = \"t1/test.txt\"\nsize = \"unpinned\"\nsha256 = \"unpinned\"\n";
    write_fixture(d, &url_source("http://127.0.0.1:9"), unpinned, "");
    let check = |d: &Path| {
        run(harness(d).args([
            "manifest",
            "check",
            "--suites-dir",
            "suites",
            "--manifests",
            "manifests",
        ]))
    };
    let out = check(d);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("mini-data:t1/test.txt"),
        "{}",
        text(&out)
    );
    std::fs::write(
        d.join("manifests/unpinned.txt"),
        "# list\nmini-data:t1/test.txt\n",
    )
    .unwrap();
    assert_eq!(code(&check(d)), 0, "{}", text(&check(d)));

    std::fs::create_dir_all(d.join("downloads/t1")).unwrap();
    std::fs::write(d.join("downloads/t1/test.txt"), &body).unwrap();
    let out = run(harness(d).args([
        "manifest",
        "pin",
        "mini-data",
        "--from",
        "downloads",
        "--manifests",
        "manifests",
    ]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    let manifest = std::fs::read_to_string(d.join("manifests/artifacts/mini-data.toml")).unwrap();
    assert!(
        manifest.contains(&format!("sha256 = \"{}\"", sha256(&body))),
        "{manifest}"
    );
    assert!(manifest.contains("size = 1000"), "{manifest}");
    assert_eq!(
        std::fs::read_to_string(d.join("manifests/unpinned.txt")).unwrap(),
        "# list\n"
    );
    assert_eq!(code(&check(d)), 0, "{}", text(&check(d)));
}

#[test]
fn a_malformed_manifest_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_fixture(
        d,
        &url_source("http://127.0.0.1:9"),
        "[[files]]\npath = \"t1/test.txt\"\nsize = 3\nsha256 = 1234\n",
        "",
    );
    let out = run(&mut fetch_cmd(d, &[]));
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("mini-data.toml:15: field `sha256`"),
        "{}",
        text(&out)
    );
}

#[test]
fn pin_without_files_asks_the_hub_for_the_commit_and_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start();
    let small = payload(300);
    let big_sha256 = sha256(&payload(5_000));
    server.add(
        "/api/datasets/testorg/tiny/revision/main",
        format!("{{\"sha\": \"{COMMIT}\"}}").as_bytes(),
        vec![],
    );
    let tree = format!(
        "[{{\"type\": \"file\", \"path\": \"t1/test.txt\", \"size\": 300, \"oid\": \"{}\"}},\
         {{\"type\": \"file\", \"path\": \"big.bin\", \"size\": 5000, \"oid\": \"ffff\", \
           \"lfs\": {{\"oid\": \"{big_sha256}\", \"size\": 5000, \"pointerSize\": 130}}}}]",
        git_blob_sha1(&small)
    );
    server.add(
        &format!("/api/datasets/testorg/tiny/tree/{COMMIT}?recursive=true"),
        tree.as_bytes(),
        vec![],
    );
    let source = "[[sources]]\nkind = \"hub\"\nrepo = \"testorg/tiny\"\nrepo_type = \"dataset\"\n\
                  revision = \"unpinned\"\n";
    let files = "[[files]]\npath = \"t1/test.txt\"\nsize = \"unpinned\"\nsha256 = \"unpinned\"\n\n\
                 [[files]]\npath = \"big.bin\"\nsize = \"unpinned\"\nsha256 = \"unpinned\"\n";
    write_fixture(d, source, files, "");
    std::fs::write(
        d.join("manifests/unpinned.txt"),
        "mini-data:source1\nmini-data:t1/test.txt\nmini-data:big.bin\n",
    )
    .unwrap();
    let mut cmd = harness(d);
    cmd.env_remove("HF_HUB_OFFLINE").args([
        "manifest",
        "pin",
        "mini-data",
        "--manifests",
        "manifests",
        "--mirror-hub",
        &server.base,
    ]);
    let out = run(&mut cmd);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let manifest = std::fs::read_to_string(d.join("manifests/artifacts/mini-data.toml")).unwrap();
    assert!(
        manifest.contains(&format!("revision = \"{COMMIT}\"")),
        "{manifest}"
    );
    assert!(
        manifest.contains(&format!("git_sha1 = \"{}\"", git_blob_sha1(&small))),
        "{manifest}"
    );
    assert!(
        manifest.contains(&format!("sha256 = \"{big_sha256}\"")),
        "{manifest}"
    );
    assert!(manifest.contains("size = 5000") && manifest.contains("size = 300"));
    assert_eq!(
        std::fs::read_to_string(d.join("manifests/unpinned.txt")).unwrap(),
        "\n"
    );
    let check = run(harness(d).args([
        "manifest",
        "check",
        "--suites-dir",
        "suites",
        "--manifests",
        "manifests",
    ]));
    assert_eq!(code(&check), 0, "{}", text(&check));
}
