//! End-to-end tests of the `wwclient` binary against a test head (see
//! `helpers`): propagation of adds, changes and deletions; files it did not
//! write; the 304 path and its size; SIGHUP; readiness; `kill -9` during an
//! apply; the secure source port; a broken head.

mod helpers;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use helpers::*;

fn base() -> Overlay {
    Overlay::new()
        .dir("etc", 0o755)
        .file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n")
        .file("etc/shadow", 0o600, "root:*:1::::::\n")
        .dir("etc/ssh", 0o755)
        .dir("root", 0o700)
        .dir("root/.ssh", 0o700)
        .file("root/.ssh/authorized_keys", 0o600, "ssh-ed25519 AAAA one\n")
        .dir("home", 0o755)
        .dir("home/alice", 0o750)
        .owned("home/alice", 1234, 1234)
        .file("home/alice/.profile", 0o644, "export A=1\n")
        .owned("home/alice/.profile", 1234, 1234)
        .link("etc/localtime", "/usr/share/zoneinfo/UTC")
}

#[test]
fn add_modify_delete_propagate() {
    let head = TestHead::start();
    let node = TestNode::new();
    // Things the agent did not write: a file in a directory it manages, a
    // directory the overlay will also name.
    fs::create_dir_all(node.root.join("etc")).unwrap();
    fs::write(node.root.join("etc/hostname"), "n1\n").unwrap();

    let v1 = base();
    head.serve(v1.gz());
    assert!(node.once(&head.url(), &[]).status.success());
    v1.assert_applied(&node.root);

    // Modify content, mode, owner and a link target; add a dir and a link;
    // drop a file, a dir with its file, and a symlink.
    let v2 = base()
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0::/root:/bin/sh\nalice:x:1234:1234::/home/alice:/bin/sh\n",
        )
        .file("etc/shadow", 0o640, "root:*:1::::::\n")
        .owned("etc/shadow", 0, 42)
        .link("etc/localtime", "/usr/share/zoneinfo/Europe/Paris")
        .dir("etc/sudoers.d", 0o750)
        .file("etc/sudoers.d/alice", 0o440, "alice ALL=(ALL) ALL\n")
        .link("etc/mtab", "/proc/self/mounts")
        .without("home/alice/.profile")
        .without("home/alice")
        .without("root/.ssh/authorized_keys");
    head.serve(v2.gz());
    assert!(node.once(&head.url(), &[]).status.success());
    v2.assert_applied(&node.root);
    assert!(
        !node.root.join("home/alice").exists(),
        "dropped directory removed"
    );
    assert!(!node.root.join("root/.ssh/authorized_keys").exists());
    assert!(node.root.join("root/.ssh").is_dir(), "still in the overlay");
    assert_eq!(
        fs::read_to_string(node.root.join("etc/hostname")).unwrap(),
        "n1\n"
    );

    // A file becomes a directory and a directory becomes a symlink; the
    // overlay switches to zstd.
    let v3 = v2
        .clone()
        .without("etc/sudoers.d/alice")
        .without("etc/sudoers.d")
        .link("etc/sudoers.d", "/etc/sudoers.real")
        .without("etc/mtab")
        .dir("etc/mtab", 0o755);
    head.serve(v3.zst());
    assert!(node.once(&head.url(), &[]).status.success());
    v3.assert_applied(&node.root);
    assert!(node.temporaries().is_empty(), "{:?}", node.temporaries());

    // The record lists only what the agent wrote.
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(node.state.join("applied.json")).unwrap()).unwrap();
    let entries = record["entries"].as_object().unwrap();
    assert!(entries.contains_key("etc/passwd"));
    assert!(
        !entries.contains_key("etc"),
        "pre-existing directory is not claimed"
    );
    assert!(!entries.contains_key("etc/hostname"));
    assert_eq!(record["etag"].as_str().unwrap(), head.etag());

    // Asset key: header and Warewulf's query parameter.
    let req = &head.runtime_requests()[0];
    assert_eq!(req.header("X-Warewulf-Asset-Key"), Some(ASSET_KEY));
    assert!(
        req.target.ends_with("?assetkey=rack%207%2Fu12"),
        "{}",
        req.target
    );
    assert_eq!(
        req.target.split('?').next().unwrap(),
        format!("/runtime/{WWID}")
    );
}

#[test]
fn never_deletes_what_it_did_not_write() {
    let head = TestHead::start();
    let node = TestNode::new();
    let v1 = Overlay::new()
        .dir("opt", 0o755)
        .dir("opt/site", 0o755)
        .file("opt/site/a", 0o644, "a");
    head.serve(v1.gz());
    assert!(node.once(&head.url(), &[]).status.success());
    // The admin adds a file to a directory the agent created, and edits a
    // file the agent wrote.
    fs::write(node.root.join("opt/site/local"), "mine").unwrap();
    fs::write(node.root.join("opt/site/a"), "edited").unwrap();

    let v2 = Overlay::new().file("other", 0o644, "x");
    head.serve(v2.gz());
    assert!(node.once(&head.url(), &[]).status.success());
    assert_eq!(
        fs::read_to_string(node.root.join("opt/site/local")).unwrap(),
        "mine"
    );
    assert_eq!(
        fs::read_to_string(node.root.join("opt/site/a")).unwrap(),
        "edited"
    );
    assert!(node.root.join("opt/site").is_dir());
}

#[test]
fn local_edit_is_kept_until_the_overlay_changes_that_file() {
    let head = TestHead::start();
    let node = TestNode::new();
    let v1 = Overlay::new().file("a", 0o644, "a1").file("b", 0o644, "b1");
    head.serve(v1.gz());
    assert!(node.once(&head.url(), &[]).status.success());
    fs::write(node.root.join("a"), "local").unwrap();
    // Another file changes: a stays local.
    head.serve(v1.clone().file("b", 0o644, "b2").gz());
    assert!(node.once(&head.url(), &[]).status.success());
    assert_eq!(fs::read_to_string(node.root.join("a")).unwrap(), "local");
    assert_eq!(fs::read_to_string(node.root.join("b")).unwrap(), "b2");
    // a changes in the overlay: overwritten.
    head.serve(v1.file("a", 0o644, "a2").file("b", 0o644, "b2").gz());
    assert!(node.once(&head.url(), &[]).status.success());
    assert_eq!(fs::read_to_string(node.root.join("a")).unwrap(), "a2");
}

#[test]
fn unchanged_poll_is_a_304_under_one_kib() {
    let head = TestHead::start();
    let node = TestNode::new();
    head.serve(base().gz());
    assert!(node.once(&head.url(), &[]).status.success());
    let mtime = fs::metadata(node.root.join("etc/passwd"))
        .unwrap()
        .modified()
        .unwrap();
    head.clear_log();
    assert!(node.once(&head.url(), &[]).status.success());
    let reqs = head.runtime_requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.status, 304);
    assert_eq!(
        r.header("If-None-Match"),
        Some(format!("\"{}\"", head.etag()).as_str())
    );
    let total = r.bytes_in + r.bytes_out;
    eprintln!(
        "unchanged poll: {} bytes request + {} bytes response = {total}",
        r.bytes_in, r.bytes_out
    );
    assert!(total < 1024, "{total} bytes");
    // Nothing else was sent (no status report on an unchanged poll after the first sync).
    assert_eq!(
        fs::metadata(node.root.join("etc/passwd"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
}

#[test]
fn sighup_polls_now_and_readiness_is_notified() {
    let head = TestHead::start();
    let node = TestNode::new();
    head.serve(base().gz());
    let name = format!("@wwclient-test-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(
        &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            &name.as_bytes()[1..],
        )
        .unwrap(),
    )
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut child = node
        .command(&head.url())
        .args(["--interval", "3600"])
        .env("NOTIFY_SOCKET", &name)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 15 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    base().assert_applied(&node.root);
    assert_eq!(head.runtime_requests().len(), 1);

    // Idle: no further polls; measure the steady RSS.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(head.runtime_requests().len(), 1);
    if let Some(kib) = rss_kib(child.id()) {
        eprintln!("wwclient VmRSS while idle: {kib} KiB");
    }

    let v2 = base().file("etc/motd", 0o644, "hello\n");
    head.serve(v2.gz());
    let t = Instant::now();
    signal(&child, libc::SIGHUP);
    assert!(head.wait_for(Duration::from_secs(5), |l| {
        l.iter()
            .filter(|r| r.target.starts_with("/runtime/"))
            .count()
            == 2
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node.root.join("etc/motd").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("SIGHUP to applied: {:?}", t.elapsed());
    v2.assert_applied(&node.root);
    // The applied overlay was reported to /status.
    assert!(head.wait_for(Duration::from_secs(5), |l| {
        l.iter().any(|r| {
            r.method == "POST"
                && r.target.starts_with(&format!("/status/{WWID}"))
                && String::from_utf8_lossy(&r.body).contains("WWCLIENT_SYNC")
        })
    }));

    signal(&child, libc::SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(5)).expect("exits on SIGTERM");
    assert!(st.success());
}

#[test]
fn readiness_on_a_socket_path() {
    let head = TestHead::start();
    let node = TestNode::new();
    head.serve(base().gz());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let out = node
        .command(&head.url())
        .arg("--once")
        .env("NOTIFY_SOCKET", &path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("READY=1"));
}

/// A big overlay whose every file differs between `gen` 0 and 1.
fn big(generation: u8) -> Overlay {
    let mut o = Overlay::new().dir("data", 0o755);
    for d in 0..4 {
        o = o.dir(&format!("data/d{d}"), 0o755);
        for i in 0..40 {
            let seed = (d * 40 + i) as u32;
            let mut x = seed.wrapping_mul(2_654_435_761)
                ^ u32::from(generation).wrapping_mul(0x9e37_79b9)
                | 1;
            let data: Vec<u8> = (0..32 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            o = o.file(
                &format!("data/d{d}/f{i}"),
                if generation == 0 { 0o644 } else { 0o640 },
                data,
            );
        }
    }
    o
}

#[test]
fn kill_9_during_apply_leaves_each_file_old_or_new() {
    let head = TestHead::start();
    let node = TestNode::new();
    let (old, new) = (big(0), big(1));
    let (old_gz, new_gz) = (old.gz(), new.gz());
    head.serve(old_gz.clone());
    assert!(node.once(&head.url(), &[]).status.success());
    old.assert_applied(&node.root);
    // `pending.json` exists from the start of an apply until its record is
    // saved: measure that window once, then aim every kill inside it (a
    // delay counted from the start of the process mostly lands in the
    // download instead). Kills after the last rename and before the record
    // is saved must leave files the next run still treats as its own.
    let pending = node.state.join("pending.json");
    let spawn = || {
        node.command(&head.url())
            .arg("--once")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait_pending = |child: &mut std::process::Child| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pending.exists() && child.try_wait().unwrap().is_none() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    head.serve(new_gz.clone());
    let mut child = spawn();
    wait_pending(&mut child);
    let t = Instant::now();
    assert!(child.wait().unwrap().success());
    let window = t.elapsed().max(Duration::from_millis(2));
    eprintln!("apply of {} files took about {window:?}", new.0.len());

    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut killed_mid_apply = 0;
    // At least 30 runs; more (up to 120) until 3 kills have landed in the
    // middle of an apply, so a loaded machine cannot make the test vacuous.
    let mut run = 0;
    while run < 30 || (killed_mid_apply < 3 && run < 120) {
        // Back to the old overlay, completely.
        head.serve(old_gz.clone());
        assert!(
            node.once(&head.url(), &[]).status.success(),
            "run {run}: reset"
        );
        old.assert_applied(&node.root);

        head.serve(new_gz.clone());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = window.mul_f64((seed % 1000) as f64 / 1000.0);
        let mut child = spawn();
        wait_pending(&mut child);
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();

        let mut old_files = 0;
        let mut new_files = 0;
        for (path, item) in &new.0 {
            let helpers::Node::File(want_new) = &item.node else {
                continue;
            };
            let helpers::Node::File(want_old) = &old.0[path].node else {
                unreachable!()
            };
            let got =
                fs::read(node.root.join(path)).unwrap_or_else(|e| panic!("run {run}: {path}: {e}"));
            let mode = fs::metadata(node.root.join(path))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            if &got == want_new {
                assert_eq!(mode, 0o640, "run {run}: {path}: new content with old mode");
                new_files += 1;
            } else if &got == want_old {
                assert_eq!(mode, 0o644, "run {run}: {path}: old content with new mode");
                old_files += 1;
            } else {
                panic!(
                    "run {run}: {path} is neither old nor new ({} bytes)",
                    got.len()
                );
            }
        }
        if old_files > 0 && new_files > 0 {
            killed_mid_apply += 1;
        }
        eprintln!("run {run}: killed after {delay:?} ({status}): {old_files} old, {new_files} new");
        run += 1;
    }
    eprintln!("{killed_mid_apply} of {run} runs were killed in the middle of an apply");
    assert!(
        killed_mid_apply >= 3,
        "the kill delays missed the apply window"
    );

    // A final clean run converges and leaves no temporaries.
    assert!(node.once(&head.url(), &[]).status.success());
    new.assert_applied(&node.root);
    assert!(node.temporaries().is_empty(), "{:?}", node.temporaries());
    assert!(!node.state.join("pending.json").exists());
}

#[test]
fn secure_head_is_satisfied_by_a_privileged_source_port() {
    let head = TestHead::start();
    head.set_secure(true);
    head.serve(base().gz());
    let node = TestNode::new();
    assert!(
        node.once(&head.url(), &["--port-range", "987-1023"])
            .status
            .success()
    );
    base().assert_applied(&node.root);
    // Twice in a row: the second connection must find a port too (the first
    // may be in TIME_WAIT), and gets a 304.
    assert!(node.once(&head.url(), &["--secure"]).status.success());
    let reqs = head.runtime_requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 304]
    );
    for r in &reqs {
        assert!(
            (987..=1023).contains(&r.peer_port),
            "peer port {}",
            r.peer_port
        );
    }
    // Warewulf-style config: server.secure=true in wwinit.conf binds too.
    fs::write(&node.config, "server.secure=true\n").unwrap();
    assert!(node.once(&head.url(), &[]).status.success());
    assert!(head.runtime_requests().last().unwrap().peer_port < 1024);
}

#[test]
fn secure_head_refuses_an_unprivileged_source_port() {
    let head = TestHead::start();
    head.set_secure(true);
    head.serve(base().gz());
    let node = TestNode::new();
    let out = node.once(&head.url(), &["--insecure"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("below 1024"));
    let reqs = head.runtime_requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].peer_port >= 1024);
    assert_eq!(reqs[0].status, 403);
    assert_eq!(
        fs::read_dir(&node.root).unwrap().count(),
        0,
        "nothing applied"
    );
}

#[test]
fn broken_head_backs_off_then_recovers() {
    let head = TestHead::start();
    let node = TestNode::new();
    head.serve(base().gz());
    // A truncated body is rejected before anything is written.
    head.set_fail(Some(Failure::Truncate));
    let out = node.once(&head.url(), &[]);
    assert!(!out.status.success());
    assert_eq!(fs::read_dir(&node.root).unwrap().count(), 0);

    // A head answering 500, then closing connections: the agent stays up
    // and does not spin (first back-off is 5 s).
    head.set_fail(Some(Failure::Status(500)));
    head.clear_log();
    let mut child = node.spawn(&head.url(), &["--interval", "1"]);
    std::thread::sleep(Duration::from_millis(2500));
    head.set_fail(Some(Failure::Close));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let polls = head.runtime_requests().len();
    assert!((1..=2).contains(&polls), "{polls} polls in 4 s");

    // Fixed: SIGHUP applies at once.
    head.set_fail(None);
    signal(&child, libc::SIGHUP);
    // Wait for the whole apply, not just its first file.
    let deadline = Instant::now() + Duration::from_secs(10);
    let quietly = |root: &std::path::Path| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| base().assert_applied(root)))
            .is_ok()
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while !quietly(&node.root) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::panic::set_hook(hook);
    base().assert_applied(&node.root);
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(5)).is_some_and(|s| s.success()));
}

/// The real head: `wwctl server` from the same target directory (built
/// first when missing), in a temp site with `secure: true`.
#[test]
fn real_head_secure_sync_304_and_delete() {
    let wwctl = std::path::Path::new(env!("CARGO_BIN_EXE_wwclient")).with_file_name("wwctl");
    if !wwctl.exists() {
        // This crate must not depend on `head`: build the binary instead.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "head", "--bin", "wwctl"])
            .current_dir(workspace)
            .status()
            .unwrap();
        assert!(status.success(), "building wwctl for the real-head test");
    }
    assert!(
        wwctl.exists(),
        "{} missing after cargo build",
        wwctl.display()
    );
    let site = tempfile::tempdir().unwrap();
    let r = site.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fs::create_dir_all(r.join("etc/warewulf")).unwrap();
    let overlay = r.join("overlays/site/rootfs");
    fs::create_dir_all(overlay.join("etc/site")).unwrap();
    fs::write(overlay.join("etc/site/a"), "a1\n").unwrap();
    fs::write(overlay.join("etc/site/b"), "b1\n").unwrap();
    fs::set_permissions(
        overlay.join("etc/site/b"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let conf = r.join("warewulf.conf");
    fs::write(
        &conf,
        format!(
            "ipaddr: 127.0.0.1\nwarewulf:\n  port: {port}\n  secure: true\n  autobuild overlays: false\n\
             dhcp:\n  enabled: false\ntftp:\n  enabled: false\npaths:\n  sysconfdir: {r}/etc\n  \
             localstatedir: {r}/var\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  \
             wwoverlaydir: {r}/overlays\n  cachedir: {r}/cache\n",
            r = r.display()
        ),
    )
    .unwrap();
    fs::write(
        r.join("etc/warewulf/nodes.conf"),
        format!(
            "nodeprofiles: {{}}\nnodes:\n  n1:\n    runtime overlay: [site]\n    system overlay: [site]\n    \
             network devices:\n      default:\n        hwaddr: {WWID}\n"
        ),
    )
    .unwrap();
    let build = || {
        let out = std::process::Command::new(&wwctl)
            .args(["overlay", "build", "n1"])
            .env("WAREWULFCONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    build();
    let mut server = std::process::Command::new(&wwctl)
        .arg("server")
        .env("WAREWULFCONF", &conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard_server = {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || server.try_wait().unwrap().is_some() {
                panic!("wwctl server did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Kill(server)
    };
    let url = format!("http://127.0.0.1:{port}");
    let node = TestNode::new();

    // A high source port is refused by the secure head.
    let out = node.once(&url, &["--insecure"]);
    assert!(!out.status.success());
    assert!(!node.root.join("etc/site/a").exists());

    // A privileged one is served.
    assert!(node.once(&url, &["--secure"]).status.success());
    assert_eq!(
        fs::read_to_string(node.root.join("etc/site/a")).unwrap(),
        "a1\n"
    );
    let b = fs::metadata(node.root.join("etc/site/b")).unwrap();
    assert_eq!(b.permissions().mode() & 0o777, 0o600);

    // Unchanged: a 304 well under 1 KiB (the client logs its byte counts).
    let out = node.once(&url, &["--secure"]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("unchanged (304"))
        .expect("a 304 poll");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    let (sent, received) = (nums[nums.len() - 2], nums[nums.len() - 1]);
    eprintln!("real head, unchanged poll: {sent} + {received} bytes");
    assert!(sent + received < 1024, "{line}");

    // Change a, drop b, add c: propagated, b deleted.
    fs::write(overlay.join("etc/site/a"), "a2\n").unwrap();
    fs::remove_file(overlay.join("etc/site/b")).unwrap();
    fs::write(overlay.join("etc/site/c"), "c1\n").unwrap();
    build();
    assert!(node.once(&url, &["--secure"]).status.success());
    assert_eq!(
        fs::read_to_string(node.root.join("etc/site/a")).unwrap(),
        "a2\n"
    );
    assert_eq!(
        fs::read_to_string(node.root.join("etc/site/c")).unwrap(),
        "c1\n"
    );
    assert!(!node.root.join("etc/site/b").exists());
}

#[test]
fn second_instance_on_the_same_state_refuses_to_run() {
    let head = TestHead::start();
    let node = TestNode::new();
    head.serve(base().gz());
    let mut first = node.spawn(&head.url(), &["--interval", "3600"]);
    assert!(head.wait_for(Duration::from_secs(10), |l| !l.is_empty()));
    let out = node.once(&head.url(), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another wwclient is running"));
    signal(&first, libc::SIGTERM);
    assert!(wait_exit(&mut first, Duration::from_secs(5)).is_some_and(|s| s.success()));
}

#[test]
fn head_without_etag_gets_if_modified_since() {
    let head = TestHead::start();
    head.set_dates_only(true);
    let node = TestNode::new();
    head.serve(base().gz());
    assert!(node.once(&head.url(), &[]).status.success());
    assert!(node.once(&head.url(), &[]).status.success());
    let v2 = base().file("etc/motd", 0o644, "new\n");
    head.serve(v2.gz());
    assert!(node.once(&head.url(), &[]).status.success());
    v2.assert_applied(&node.root);
    let reqs = head.runtime_requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 304, 200]
    );
    assert!(reqs[1].header("If-Modified-Since").is_some());
    assert!(reqs[1].header("If-None-Match").is_none());
}

/// The real head with `tls: true`: wwclient verifies it under the cluster
/// CA, gets its node token with `HEAD /system` (none on disk yet), syncs
/// over HTTPS, and keeps the rotated token. A foreign CA and plain HTTP get
/// nothing.
#[test]
fn real_head_tls_token_and_ca() {
    let wwctl = std::path::Path::new(env!("CARGO_BIN_EXE_wwclient")).with_file_name("wwctl");
    if !wwctl.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "head", "--bin", "wwctl"])
            .current_dir(workspace)
            .status()
            .unwrap();
        assert!(status.success(), "building wwctl for the real-head test");
    }
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let site = tempfile::tempdir().unwrap();
    let r = site.path();
    let (port, tls_port) = (free_port(), free_port());
    fs::create_dir_all(r.join("etc/warewulf")).unwrap();
    let overlay = r.join("overlays/site/rootfs");
    fs::create_dir_all(overlay.join("etc/site")).unwrap();
    fs::write(overlay.join("etc/site/a"), "a1\n").unwrap();
    let conf = r.join("warewulf.conf");
    fs::write(
        &conf,
        format!(
            "ipaddr: 127.0.0.1\nwarewulf:\n  port: {port}\n  tls port: {tls_port}\n  tls: true\n  \
             secure: false\n  autobuild overlays: false\n\
             dhcp:\n  enabled: false\ntftp:\n  enabled: false\npaths:\n  sysconfdir: {r}/etc\n  \
             localstatedir: {r}/var\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  \
             wwoverlaydir: {r}/overlays\n  cachedir: {r}/cache\n",
            r = r.display()
        ),
    )
    .unwrap();
    fs::write(
        r.join("etc/warewulf/nodes.conf"),
        format!(
            "nodeprofiles: {{}}\nnodes:\n  n1:\n    runtime overlay: [site]\n    system overlay: [site]\n    \
             network devices:\n      default:\n        hwaddr: {WWID}\n        ipaddr: 127.0.0.1\n"
        ),
    )
    .unwrap();
    let wwctl_ok = |args: &[&str]| {
        let out = std::process::Command::new(&wwctl)
            .args(args)
            .env("WAREWULFCONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wwctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    wwctl_ok(&["configure", "tls", "--create"]);
    wwctl_ok(&["overlay", "build", "n1"]);
    let server = std::process::Command::new(&wwctl)
        .arg("server")
        .env("WAREWULFCONF", &conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = Kill(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline && guard.0.try_wait().unwrap().is_none(),
            "wwctl server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca = r.join("etc/warewulf/tls/ca.crt");
    let ca_arg = ca.to_str().unwrap();
    let https = format!("https://127.0.0.1:{tls_port}");
    let node = TestNode::new();
    let token = node.root.join("warewulf/token");

    // Plain HTTP: the runtime overlay is HTTPS-only.
    let out = node.once(&format!("http://127.0.0.1:{port}"), &[]);
    assert!(!out.status.success());
    assert!(!node.root.join("etc/site/a").exists());

    // A foreign CA: the head cannot prove itself, nothing is fetched.
    let other = tempfile::tempdir().unwrap();
    let other_conf = other.path().join("warewulf.conf");
    fs::write(
        &other_conf,
        format!(
            "ipaddr: 127.0.0.1\npaths:\n  sysconfdir: {}/etc\n",
            other.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(&wwctl)
        .args(["configure", "tls", "--create"])
        .env("WAREWULFCONF", &other_conf)
        .output()
        .unwrap();
    assert!(out.status.success());
    let foreign = other.path().join("etc/warewulf/tls/ca.crt");
    let out = node.once(&https, &["--ca", foreign.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "the error names the certificate"
    );
    assert!(!node.root.join("etc/site/a").exists());
    assert!(!token.exists(), "no token from an unverified head");

    // The right CA: token fetched, overlay applied, token kept 0600.
    assert!(node.once(&https, &["--ca", ca_arg]).status.success());
    assert_eq!(
        fs::read_to_string(node.root.join("etc/site/a")).unwrap(),
        "a1\n"
    );
    let first = fs::read_to_string(&token).unwrap();
    assert!(first.starts_with("iw1."), "{first}");
    assert_eq!(
        fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A token that is not this node's is replaced, not fatal.
    fs::write(&token, "iw1.99999999999.00\n").unwrap();
    fs::write(overlay.join("etc/site/a"), "a2\n").unwrap();
    wwctl_ok(&["overlay", "build", "n1"]);
    let out = node.once(&https, &["--ca", ca_arg]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("renewing it"));
    assert_eq!(
        fs::read_to_string(node.root.join("etc/site/a")).unwrap(),
        "a2\n"
    );
    assert!(fs::read_to_string(&token).unwrap().starts_with("iw1."));
    assert_ne!(fs::read_to_string(&token).unwrap(), "iw1.99999999999.00\n");
    drop(guard);
}
