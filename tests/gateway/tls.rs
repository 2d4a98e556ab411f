//! https end to end (issue 20): `tollgate mock-eks --tls-cert/--tls-key` as an https upstream,
//! the gateway trusting it through `--upstream-ca-file` and refusing it (with what to do)
//! without, or when its certificate is expired or for another name; the Python SDK reaching an
//! https gateway (trusting the test CA through `SSL_CERT_FILE`); the handshake timeout; and
//! certificate, key and CA files that cannot serve (exit 2, named). Every certificate is made
//! here with rcgen into a temporary folder.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use serde_json::{Value, json};

use super::{ALLOW_ALL, call, initialize, start_gateway_http, stdio_gateway, write};
use crate::mock_eks::{Guard, check_client_summary, python, start_http};
use crate::util::{root, tollgate};

/// A test CA and the files of one server certificate it signed.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A CA (`ca.pem`) in a new temporary folder.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Tollgate test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    fn ca(&self) -> String {
        self.path("ca.pem")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// A server certificate for `names`, signed by the CA, valid now unless `expired`: its
    /// `NAME.pem` and `NAME.key`.
    fn server(&self, name: &str, names: &[&str], expired: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (format!("{name}.pem"), format!("{name}.key"));
        std::fs::write(self.dir.path().join(&c), cert.pem()).unwrap();
        std::fs::write(self.dir.path().join(&k), key.serialize_pem()).unwrap();
        (self.path(&c), self.path(&k))
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `tollgate mock-eks --http 127.0.0.1:0` serving https with `cert`, and its URL.
fn https_mock(cert: &str, key: &str, extra: &[&str]) -> (Guard, String) {
    let (guard, url) = start_http(&[&["--tls-cert", cert, "--tls-key", key], extra].concat());
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    (guard, url)
}

/// The stdio gateway's answer to `initialize` in front of `url` (with `extra` flags).
/// The gateway reaches an https upstream whose certificate a private CA signed once that CA is
/// given with `--upstream-ca-file`: a call goes through and the mock's journal holds it.
#[test]
fn an_https_upstream_is_reached_with_its_ca_file() {
    let pki = Pki::new();
    let (cert, key) = pki.server("mock", &["localhost", "127.0.0.1"], false);
    let journal = pki.dir().join("journal.jsonl");
    let (_mock, url) = https_mock(
        &cert,
        &key,
        &["--journal", journal.to_str().unwrap(), "--allow-write"],
    );
    let policy = write(pki.dir(), "allow.json", ALLOW_ALL);
    let answers = stdio_gateway(
        &[
            "--policy",
            &policy,
            "--upstream-url",
            &url,
            "--upstream-ca-file",
            &pki.ca(),
        ],
        &[
            initialize(1),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            call(2, "CancelAHORunBatch", json!({"batchId": "rb-0001"})),
        ],
        Duration::from_millis(1500),
    );
    assert_eq!(
        answers[0]["result"]["serverInfo"]["name"], "tollgate-mock-eks",
        "{answers:?}"
    );
    assert_eq!(answers[1]["result"]["isError"], false, "{answers:?}");
    let journal = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(
        journal.matches("CancelAHORunBatch").count(),
        1,
        "the call reached the https mock once: {journal}"
    );
}

/// `tollgate gateway` in front of `url` (with `extra` flags) over stdio: it must not start.
/// Returns its stderr, after checking the exit code is 2 (bounded: it fails before serving).
fn refused_to_start(args: &[&str]) -> String {
    let out = tollgate()
        .arg("gateway")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// An https upstream whose certificate cannot be trusted is a configuration to fix, which no
/// retry mends: the gateway does not start (exit 2, before it serves anything) and says which
/// upstream, what failed and what to do: not signed by a trusted authority (no
/// `--upstream-ca-file`), expired, or issued for another name.
#[test]
fn an_untrusted_https_upstream_is_refused_saying_why() {
    let pki = Pki::new();
    let (good_cert, good_key) = pki.server("good", &["localhost", "127.0.0.1"], false);
    let (old_cert, old_key) = pki.server("old", &["localhost", "127.0.0.1"], true);
    let (other_cert, other_key) = pki.server("other", &["upstream.example"], false);
    let policy = write(pki.dir(), "allow.json", ALLOW_ALL);
    let mut messages = Vec::new();
    for (case, cert, key, ca) in [
        ("no CA file", &good_cert, &good_key, false),
        ("expired", &old_cert, &old_key, true),
        ("another name", &other_cert, &other_key, true),
    ] {
        let (_mock, url) = https_mock(cert, key, &[]);
        let ca_file = pki.ca();
        let mut args = vec!["--policy", policy.as_str(), "--upstream-url", url.as_str()];
        if ca {
            args.extend(["--upstream-ca-file", ca_file.as_str()]);
        }
        let started = Instant::now();
        let stderr = refused_to_start(&args);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{case}: not fast"
        );
        let port = url.rsplit(':').next().unwrap().trim_end_matches("/mcp");
        messages.push(format!("{case}: {}", stderr.trim().replace(port, "PORT")));
    }
    insta::assert_snapshot!(messages.join("\n"));
}

/// Behind a config of several upstreams, one https upstream whose certificate is not trusted
/// stops the gateway from starting (exit 2), naming that upstream; given its `ca_file`, the
/// same config serves both upstreams.
#[test]
fn an_untrusted_upstream_of_several_stops_the_gateway_naming_it() {
    let pki = Pki::new();
    let (cert, key) = pki.server("mock", &["localhost", "127.0.0.1"], false);
    let (_mock, url) = https_mock(&cert, &key, &[]);
    write(pki.dir(), "allow.json", ALLOW_ALL);
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let head = format!(
        "policy = \"allow.json\"\n[[upstream]]\nname = \"eks\"\ncommand = [{exe:?}, \"mock-eks\", \"--tools\", \"real\"]\n[[upstream]]\nname = \"omics\"\nurl = {url:?}\n"
    );
    let untrusted = write(pki.dir(), "untrusted.toml", &head);
    let stderr = refused_to_start(&["--config", &untrusted]);
    assert!(
        stderr.contains("upstream `omics`: the upstream https://127.0.0.1:")
            && stderr.contains("not trusted")
            && stderr.contains("`ca_file` of a config's upstream")
            && stderr.contains("the gateway does not start"),
        "{stderr}"
    );
    let trusted = write(
        pki.dir(),
        "trusted.toml",
        &format!("{head}ca_file = {:?}\n", pki.ca()),
    );
    let answers = stdio_gateway(
        &["--config", &trusted],
        &[
            initialize(1),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        ],
        Duration::from_millis(2000),
    );
    let names: Vec<&str> = answers[1]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"eks__list_k8s_resources") && names.contains(&"omics__GetAHOBatch"),
        "{names:?}"
    );
}

/// A plain-HTTP URL given for an https server, and an https URL given for a plain one, fail
/// fast with an error that names the URL (the second says to use `http://`): the second before
/// the gateway starts (exit 2).
#[test]
fn a_scheme_that_does_not_match_the_upstream_is_named() {
    let (_plain, plain_url) = start_http(&[]);
    let https_url = plain_url.replacen("http://", "https://", 1);
    let pki = Pki::new();
    let policy = write(pki.dir(), "allow.json", ALLOW_ALL);
    let text = refused_to_start(&["--policy", &policy, "--upstream-url", &https_url]);
    assert!(
        text.contains(&https_url)
            && text.contains("does not speak TLS")
            && text.contains("http://"),
        "{text}"
    );
}

/// The official Python SDK reaches an https gateway (its listener's certificate signed by the
/// test CA, which the SDK trusts through `SSL_CERT_FILE`), itself in front of an https mock:
/// the same answers as over plain HTTP.
#[test]
fn python_sdk_reaches_an_https_gateway() {
    let pki = Pki::new();
    let (mock_cert, mock_key) = pki.server("mock", &["127.0.0.1"], false);
    let (gw_cert, gw_key) = pki.server("gateway", &["localhost", "127.0.0.1"], false);
    let (_mock, mock_url) = https_mock(&mock_cert, &mock_key, &["--allow-write"]);
    let policy = write(pki.dir(), "allow.json", ALLOW_ALL);
    let (_gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--tls-cert",
        &gw_cert,
        "--tls-key",
        &gw_key,
        "--upstream-url",
        &mock_url,
        "--upstream-ca-file",
        &pki.ca(),
    ]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let out = Command::new(python())
        .arg(root().join("tests/python/mcp_client.py"))
        .args(["--mode", "legacy", "--url", &url])
        .env("SSL_CERT_FILE", pki.ca())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_client_summary(&summary, "2025-11-25", 1);
}

/// A client that opens a TCP connection to the https gateway and never sends its ClientHello
/// is closed after `--tls-handshake-timeout` and counted; with `--max-connections 1` its slot
/// is then free for a real client, which reads the count in `/metrics` over https.
#[test]
fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let (cert, key) = pki.server("gateway", &["127.0.0.1"], false);
    let (_mock, mock_url) = start_http(&[]);
    let policy = write(pki.dir(), "allow.json", ALLOW_ALL);
    let (_gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-handshake-timeout",
        "0.5",
        "--max-connections",
        "1",
        "--upstream-url",
        &mock_url,
    ]);
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches("/mcp")
        .to_owned();
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = silent.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err() && waited < Duration::from_secs(9),
        "the server closed the connection: {read:?} after {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "closed after the handshake timeout (0.5 s), not {waited:?}"
    );
    let metrics = https_get(&format!("https://{addr}/metrics"), &pki.ca());
    assert!(
        metrics.contains("tollgate_tls_handshakes_timed_out_total 1"),
        "{metrics}"
    );
}

/// GET over https trusting `ca` only (reqwest with rustls, as the gateway builds it).
fn https_get(url: &str, ca: &str) -> String {
    let client = tollgate_gateway::upstream::http_client(Some(Path::new(ca))).unwrap();
    let rt = super::rt();
    rt.block_on(async {
        let resp = client
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.text().await.unwrap()
    })
}

/// A certificate, key or CA file that cannot serve: exit 2 before anything listens, naming the
/// file and what to give instead.
#[test]
fn unusable_certificate_key_and_ca_files_exit_2_naming_the_file() {
    let pki = Pki::new();
    let (cert, key) = pki.server("srv", &["127.0.0.1"], false);
    let notes = write(pki.dir(), "notes.txt", "not PEM\n");
    let missing = pki.path("missing.pem");
    let policy = write(pki.dir(), "allow.json", ALLOW_ALL);
    let gateway = |extra: &[&str]| -> Vec<String> {
        [
            &[
                "gateway",
                "--policy",
                policy.as_str(),
                "--listen",
                "127.0.0.1:0",
            ][..],
            extra,
            &["--upstream-url", "https://127.0.0.1:1/mcp"],
        ]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect()
    };
    let mock = |extra: &[&str]| -> Vec<String> {
        [&["mock-eks", "--http", "127.0.0.1:0"][..], extra]
            .concat()
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            gateway(&["--tls-cert", &missing, "--tls-key", &key]),
            "missing.pem",
        ),
        (
            gateway(&["--tls-cert", &notes, "--tls-key", &key]),
            "notes.txt",
        ),
        (
            gateway(&["--tls-cert", &cert, "--tls-key", &notes]),
            "notes.txt",
        ),
        (gateway(&["--upstream-ca-file", &notes]), "notes.txt"),
        (gateway(&["--upstream-ca-file", &missing]), "missing.pem"),
        (
            mock(&["--tls-cert", &cert, "--tls-key", &missing]),
            "missing.pem",
        ),
        (
            mock(&["--tls-cert", &notes, "--tls-key", &key]),
            "notes.txt",
        ),
    ];
    for (args, file) in cases {
        let out = tollgate().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(file) && stderr.contains("PEM") || stderr.contains("cannot read"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(file), "{args:?} names {file}: {stderr}");
    }
}
