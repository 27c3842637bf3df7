//! Real Redis and PostgreSQL servers for tests: each on 127.0.0.1 on a port picked here, in its
//! own temporary directory, killed by PID and removed when its guard drops (also when the
//! test panics). The binaries are installed by `./scripts/test.sh`; a test that finds them
//! missing fails and says so.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's PostgreSQL 15 server binaries are.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A port nothing listens on right now (bound to :0, then closed).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn find_binary(name: &str, dirs: &[&str]) -> PathBuf {
    for d in dirs {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` was not found (looked in {dirs:?}): the real-server tests need Redis and \
         PostgreSQL installed; run ./scripts/test.sh, which installs them \
         (apt-get install -y redis-server postgresql)"
    );
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited ({status}) before listening on {port}:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops `child`: `sig` first, SIGKILL after `grace`.
fn stop_child(child: &mut Child, sig: &str, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `redis-server` (no persistence unless started with [`RedisServer::start_persistent`]).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// Starts one on a free port; panics (saying how to install it) when it is missing.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Starts one whose data survives [`RedisServer::stop`] and [`RedisServer::restart`]
    /// (append-only file, fsync'd on every write).
    pub fn start_persistent() -> Self {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Self {
            port: free_port(),
            child: None,
            dir,
            persistent,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = find_binary("redis-server", &["/usr/bin", "/usr/local/bin", "/usr/sbin"]);
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"]);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut child = cmd
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        wait_for_port(self.port, &mut child, "redis-server", &log);
        self.child = Some(child);
    }

    /// Starts the server again on the same port and directory (after [`RedisServer::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server now (the directory stays until the guard drops).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            return (f[2].parse().expect("uid"), f[3].parse().expect("gid"));
        }
    }
    panic!(
        "there is no `postgres` user to run PostgreSQL as (root may not); run ./scripts/test.sh, \
         which installs PostgreSQL (apt-get install -y postgresql)"
    );
}

/// A running PostgreSQL 15 (`trust` auth, user `postgres`, database `postgres`, fsync off).
pub struct PgServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The `postgres` user's uid and gid when the tests run as root.
    ids: Option<(u32, u32)>,
}

impl PgServer {
    /// Initialises a cluster in a temp dir and starts `postgres` on a free port. As root,
    /// both run as the `postgres` user (the dir is handed to it).
    pub fn start() -> Self {
        let initdb = find_binary("initdb", &[PG_BIN]);
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = is_root().then(postgres_ids);
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let mut s = Self {
            port: free_port(),
            child: None,
            dir,
            ids,
        };
        let mut init = Command::new(initdb);
        init.arg("-D")
            .arg(s.dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C"]);
        s.as_user(&mut init);
        let out = init.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        s.spawn();
        s
    }

    fn as_user(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(self.dir.path())
            .env("HOME", self.dir.path());
    }

    fn spawn(&mut self) {
        let postgres = find_binary("postgres", &[PG_BIN]);
        let log = self.dir.path().join("postgres.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown log");
        }
        let mut run = Command::new(postgres);
        run.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        self.as_user(&mut run);
        let mut child = run.spawn().expect("spawn postgres");
        wait_for_port(self.port, &mut child, "postgres", &log);
        self.child = Some(child);
    }

    /// Starts the server again on the same port and data (after [`PgServer::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown, SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, "INT", Duration::from_secs(10));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client of a test PostgreSQL (user and database `postgres`), retried for up to 30 s while
/// the server starts; its connection runs on the current runtime.
pub async fn pg_client(port: u16) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
        {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                return c;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "postgres: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection to database `db` of a test Redis.
pub async fn redis_conn(port: u16, db: u8) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/{db}"))
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis")
}
