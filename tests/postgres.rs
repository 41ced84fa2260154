//! The PostgreSQL endpoint with the real `psql` client: log in with the configured password,
//! list and describe tables, run trailmap's functions, and get a clear refusal for writes.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};

/// `trailmap serve` on a free port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PASSWORD: &str = "journeys-are-not-linear";

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trailmap.toml");
    std::fs::write(
        &config,
        format!(
            "[journeys.signup_to_purchase]\nsteps = [\"signup\", \"purchase\"]\nwindow = \"1h\"\n\n\
             [server]\npostgres_password = \"{PASSWORD}\"\n"
        ),
    )
    .unwrap();
    let shop = root().join("tests/sql/data/shop.csv");
    let mut child = bin()
        .args([
            "serve",
            "--config",
            s(&config),
            "--input",
            s(&shop),
            "--postgres-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start trailmap serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let port = line
        .split_once("listening on ")
        .and_then(|(_, rest)| rest.split(':').nth(1))
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server {
        child,
        port,
        _dir: dir,
    }
}

fn psql(server: &Server, password: &str, command: &str) -> Output {
    common::psql(server.port, password, command)
}

#[test]
fn psql_lists_describes_queries_and_is_refused_writes() {
    let server = start();

    let tables = ok(psql(&server, PASSWORD, "\\dt"));
    for table in ["events", "journeys", "transitions"] {
        assert!(tables.contains(table), "\\dt lists {table}:\n{tables}");
    }
    let columns = ok(psql(&server, PASSWORD, "\\d events"));
    for column in ["customer", "session", "ts", "touchpoint", "stage", "source"] {
        assert!(
            columns.contains(column),
            "\\d events shows {column}:\n{columns}"
        );
    }

    let counts = ok(psql(
        &server,
        PASSWORD,
        "SELECT customer, count(*) FROM events GROUP BY customer ORDER BY customer",
    ));
    assert_eq!(counts, "c1|4\nc2|4\nc3|3\nc4|3\nc5|1\n");

    let levels = ok(psql(
        &server,
        PASSWORD,
        "SELECT customer, window_funnel(3600, '', ts, touchpoint = 'signup', \
         touchpoint = 'purchase') FROM events GROUP BY customer ORDER BY customer",
    ));
    assert_eq!(levels, "c1|2\nc2|0\nc3|1\nc4|1\nc5|0\n");

    let funnel = ok(psql(
        &server,
        PASSWORD,
        "SELECT name, reached FROM funnel('signup_to_purchase') ORDER BY step",
    ));
    assert_eq!(funnel, "signup|3\npurchase|1\n");

    let converted = ok(psql(
        &server,
        PASSWORD,
        "SELECT customer FROM journeys WHERE converted_signup_to_purchase",
    ));
    assert_eq!(converted, "c1\n");

    let drop = psql(&server, PASSWORD, "DROP TABLE events");
    assert!(!drop.status.success(), "DROP TABLE must be refused");
    let err = String::from_utf8_lossy(&drop.stderr);
    assert!(err.contains("read-only"), "{err}");
    // Still there.
    assert_eq!(
        ok(psql(&server, PASSWORD, "SELECT count(*) FROM events")),
        "15\n"
    );

    // The server's own settings are not the client's to change.
    let set = psql(
        &server,
        PASSWORD,
        "SET datafusion.runtime.memory_limit = '1TB'",
    );
    assert!(
        !set.status.success(),
        "SET of a server setting must be refused"
    );
    assert!(String::from_utf8_lossy(&set.stderr).contains("read-only"));

    let wrong = psql(&server, "not-the-password", "SELECT 1");
    assert!(!wrong.status.success(), "a wrong password must not log in");
}
