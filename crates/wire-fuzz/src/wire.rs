//! The generated traffic: a [`Case`] is a few clients (a grant and a protocol version each)
//! and the wire messages they send, in order, through one front (HTTP or stdio) of a gateway
//! in front of the naive upstream (HTTP or stdio). Messages are kept as small shrinkable
//! choices and rendered to bytes by hand ([`render`]), so a message can carry what a JSON
//! serializer never writes: duplicate keys, `\u` escapes, odd number spellings, a cut, padding
//! to the gateway's size limit, bytes that are not UTF-8.
//!
//! What varies: the method's spelling (case, surrounding and inserted whitespace or invisible
//! characters, look-alike letters, other separators, escapes), requests and notifications,
//! batches (in every protocol version), ids (colliding small integers, `tollgate-` prefixed
//! strings, huge and negative integers, floats, `null`, other types), duplicate keys, the
//! tool (known, a near miss, unknown, not a string), the arguments (valid and edge values of
//! the policy's checks, odd numbers and types, nesting), the `jsonrpc` member, the stateless
//! `_meta` envelope, cut and padded messages, concurrency (a step does not always wait for
//! its answer) and, over HTTP, a token that is not the session's.

use std::fmt::Write as _;

use proptest::prelude::*;

/// The largest message the fuzzing gateway accepts (its `--max-message-bytes`), small so that
/// messages at the limit are cheap to make.
pub const LIMIT: usize = 16 * 1024;

/// The protocol versions a client may speak; the last is the stateless one.
pub const VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// The bearer tokens of the HTTP front (its tokens file) and the grants they map to.
pub const GRANTS: [(&str, &str); 3] = [
    ("wirefuzz-ci-bot-token", "ci-bot"),
    ("wirefuzz-analyst-token", "analyst"),
    ("wirefuzz-ops-token", "ops"),
];

/// The tokens file of the HTTP front.
pub fn tokens_file() -> String {
    GRANTS.iter().fold(String::new(), |mut s, (token, grant)| {
        let _ = writeln!(s, "{token} {grant}");
        s
    })
}

/// A client transport (the gateway's front) or an upstream transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Http,
    Stdio,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Stdio => "stdio",
        }
    }
}

/// One generated case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub front: Transport,
    pub upstream: Transport,
    /// How many naive upstreams stand behind the gateway: 1 is one upstream as it is; more
    /// are `u0`, `u1`, … behind the router of several upstreams, their tools exposed as
    /// `u0__read_file`, … ([`prefix`]).
    pub upstreams: usize,
    pub clients: Vec<ClientSpec>,
    pub steps: Vec<Step>,
}

/// The name of upstream `k` of several.
pub fn upstream_name(k: usize) -> String {
    format!("u{k}")
}

/// The prefix of upstream `k`'s exposed tool names (the router's default).
pub fn prefix(k: usize) -> String {
    format!("u{k}__")
}

impl Case {
    /// A case of messages written by hand (regression cases): `clients` are (grant, protocol
    /// version) pairs of indexes into [`GRANTS`] and [`VERSIONS`]; each message is sent by its
    /// client and waited for.
    pub fn by_hand(
        front: Transport,
        upstream: Transport,
        clients: &[(usize, usize)],
        messages: &[(usize, &str)],
    ) -> Case {
        let steps: Vec<(usize, bool, &str)> = messages.iter().map(|&(c, t)| (c, true, t)).collect();
        Case::by_hand_overlapping(front, upstream, clients, &steps)
    }

    /// [`Case::by_hand`] where a message may overlap the next: `(client, wait, text)`.
    pub fn by_hand_overlapping(
        front: Transport,
        upstream: Transport,
        clients: &[(usize, usize)],
        messages: &[(usize, bool, &str)],
    ) -> Case {
        Case {
            front,
            upstream,
            upstreams: 1,
            clients: clients
                .iter()
                .map(|&(grant, version)| ClientSpec { grant, version })
                .collect(),
            steps: messages
                .iter()
                .map(|&(client, wait, text)| Step {
                    client,
                    body: Body {
                        shape: Shape::Text(text.to_owned()),
                        damage: Damage::None,
                    },
                    wait,
                    token: None,
                })
                .collect(),
        }
    }
}

/// One client: its grant (index into [`GRANTS`]) and protocol version (into [`VERSIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSpec {
    pub grant: usize,
    pub version: usize,
}

impl ClientSpec {
    pub fn grant(&self) -> &'static str {
        GRANTS[self.grant % GRANTS.len()].1
    }

    pub fn token(&self) -> &'static str {
        GRANTS[self.grant % GRANTS.len()].0
    }

    pub fn version(&self) -> &'static str {
        VERSIONS[self.version % VERSIONS.len()]
    }

    /// Whether the client speaks the stateless protocol (no `initialize`, `_meta` on every
    /// request).
    pub fn stateless(&self) -> bool {
        self.version() == "2026-07-28"
    }
}

/// The name client `i` gives in `clientInfo` (how the naive upstream tells clients apart).
pub fn client_name(i: usize) -> String {
    format!("fuzz-c{i}")
}

/// One wire message from one client.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Index into the case's clients (modulo their number, so shrinking them keeps it valid).
    pub client: usize,
    pub body: Body,
    /// Wait for this message's answers before the next step (otherwise they overlap).
    pub wait: bool,
    /// HTTP only: present this grant's token instead of the client's own.
    pub token: Option<usize>,
}

/// A wire message: its shape, then what is done to its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub shape: Shape,
    pub damage: Damage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A batch of the items, or (not `batch`) the first item alone: one shape, so that a
    /// failing batch shrinks to a single message when that fails too.
    Items { items: Vec<Item>, batch: bool },
    /// One of [`RAW`].
    Raw(usize),
    /// A message written by hand (regression cases; never generated).
    Text(String),
}

/// What is done to a rendered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    None,
    /// Cut at this fraction of its length (per mille).
    Cut(u16),
    /// Padded with spaces to [`LIMIT`] plus this many bytes.
    Pad(i8),
    /// One of [`SUFFIXES`] appended.
    Suffix(usize),
    /// One of [`WHITESPACE`] around it.
    Around(usize),
}

/// Messages that are odd as a whole.
pub const RAW: [&[u8]; 12] = [
    b"",
    b"[]",
    b"null",
    b"{}",
    b"[1]",
    b"[[]]",
    b"\"tools/call\"",
    b"{\"jsonrpc\":\"2.0\"}",
    b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
    b"\xff\xfe{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}",
    b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"kv\",\"arguments\":{\"op\":\"get\",\"key\":\"\xc3\x28\"}}}",
    b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"kv\",\"arguments\":{\"op\":\"get\",\"key\":\"k\"}}}}",
];

/// Text appended after a message.
pub const SUFFIXES: [&str; 5] = [
    " x",
    "}",
    ",",
    "\n{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}",
    "\r\n\r\n",
];

/// Whitespace around a message or a method.
pub const WHITESPACE: [&str; 7] = [" ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "\u{feff}"];

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub method: Method,
    pub id: Id,
    pub params: Params,
    pub jsonrpc: Jsonrpc,
    pub dup: Option<Dup>,
    /// Rotates the order of the members.
    pub order: u8,
    /// For a stateless client: whether the `_meta` envelope is there.
    pub meta: bool,
}

/// The methods spelled: `tools/call` first.
pub const METHODS: [&str; 9] = [
    "tools/call",
    "tools/list",
    "ping",
    "resources/list",
    "prompts/get",
    "notifications/progress",
    "notifications/cancelled",
    "completion/complete",
    "tools/calls",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    /// Index into [`METHODS`].
    pub base: usize,
    pub spell: Vec<Spell>,
    /// Characters (by position, the first 32) written as `\uXXXX` escapes.
    pub escape: u32,
}

/// A change to a method's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spell {
    Upper,
    /// `Tools/Call`.
    Title,
    /// Flips the case of the characters whose bit is set.
    Flip(u16),
    Lead(usize),
    Trail(usize),
    /// Replaces `/` with one of [`SEPARATORS`].
    Sep(usize),
    /// Replaces the character at a position with a look-alike (Cyrillic or fullwidth).
    LookAlike(usize, bool),
    /// Inserts one of [`INVISIBLE`] at a position.
    Insert(usize, usize),
}

pub const SEPARATORS: [&str; 10] = [
    ".", "_", "-", "//", "\\", "", " ", ":", "\u{ff0f}", "\u{2215}",
];

pub const INVISIBLE: [&str; 8] = [
    "\u{200b}", "\u{200c}", "\u{200d}", "\u{2060}", "\u{ad}", "\u{0}", "\u{feff}", "\u{34f}",
];

/// Cyrillic look-alikes of Latin letters.
const CYRILLIC: [(char, char); 7] = [
    ('o', '\u{43e}'),
    ('a', '\u{430}'),
    ('c', '\u{441}'),
    ('s', '\u{455}'),
    ('i', '\u{456}'),
    ('p', '\u{440}'),
    ('e', '\u{435}'),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    /// A notification.
    None,
    /// 1 to 4: ids collide often.
    Int(u8),
    /// One of [`STRING_IDS`].
    Str(usize),
    /// One of [`RAW_IDS`], written as is.
    Raw(usize),
}

pub const STRING_IDS: [&str; 10] = [
    "a",
    "1",
    "tollgate-internal-1",
    "tollgate-internal-2",
    "tollgate-reinit-1",
    "tollgate-elicit-1",
    "TOLLGATE-INTERNAL-1",
    "tollgate-internal-",
    "",
    "hs-c0",
];

pub const RAW_IDS: [&str; 13] = [
    "0",
    "-1",
    "18446744073709551615",
    "-9223372036854775808",
    "18446744073709551616",
    "1.5",
    "1.0",
    "1e3",
    "null",
    "true",
    "{}",
    "[1]",
    "-0",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jsonrpc {
    Good,
    Missing,
    /// One of `"1.0"`, `2.0`, `"2.0 "`, `null`.
    Wrong(usize),
}

const WRONG_JSONRPC: [&str; 4] = ["\"1.0\"", "2.0", "\"2.0 \"", "null"];

#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    Call(Call),
    None,
    Empty,
    /// `{"cursor": "..."}`.
    Cursor,
    /// `params` that is not an object: one of `[]`, `"x"`, `7`, `null`.
    NotObject(usize),
}

const NOT_OBJECT: [&str; 4] = ["[]", "\"x\"", "7", "null"];

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub tool: Tool,
    /// Which upstream's tool it names when there are several (modulo their number).
    pub upstream: usize,
    pub args: Args,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// One of the naive upstream's tools ([`crate::naive::TOOL_NAMES`]).
    Known(usize),
    /// A near miss of a known tool: upper case, a trailing space, a Cyrillic letter.
    Variant(usize, usize),
    /// A name nobody offers.
    Unknown(usize),
    /// A name that is not a string: `7`, `null`, `["read_file"]`, `{}`.
    NotString(usize),
}

/// Names nobody offers, the router's look-alikes among them (an empty tool after a prefix, a
/// doubled prefix, an upstream that does not exist, a one-underscore prefix, an upstream
/// selector, a prefix in upper case).
const UNKNOWN_TOOLS: [&str; 9] = [
    "format_disk",
    "",
    "read_file/../delete_file",
    "u0__",
    "u0__u1__read_file",
    "u9__read_file",
    "u0_read_file",
    "upstream:u0",
    "U1__kv",
];
const NOT_STRING: [&str; 4] = ["7", "null", "[\"read_file\"]", "{}"];

#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    Object(Vec<(Key, Val)>),
    Missing,
    Null,
    /// `arguments` that is not an object: `[]`, `"x"`, `1`.
    NotObject(usize),
}

const ARGS_NOT_OBJECT: [&str; 3] = ["[]", "\"x\"", "1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// One of the tool's own arguments (its schema's properties).
    Own(usize),
    /// One of [`ODD_KEYS`].
    Odd(usize),
}

const ODD_KEYS: [&str; 5] = ["", "PATH", "path ", "__proto__", "_meta"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    /// One of the argument's own values: valid ones and the edges of the policy's checks.
    Good(usize),
    /// One of [`ODD_VALUES`].
    Odd(usize),
    /// A string this long.
    Long(u16),
}

pub const ODD_VALUES: [&str; 20] = [
    "\"\"",
    "null",
    "true",
    "0",
    "-0",
    "-1",
    "1.5",
    "1e2",
    "1E400",
    "18446744073709551616",
    "9007199254740993",
    "-9223372036854775809",
    "[]",
    "{}",
    "[1,\"a\",null]",
    "{\"nested\":{\"deep\":[1,2,{\"x\":null}]}}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"kube-system\"",
    "\"/srv/\\u002e\\u002e/etc\"",
];

/// Each tool's arguments and their own values (JSON texts), valid ones first.
fn tool_args(tool: &str) -> &'static [(&'static str, &'static [&'static str])] {
    const PATH: &[&str] = &[
        "\"/srv/a.txt\"",
        "\"/srv/docs/readme.md\"",
        "\"/tmp/out.txt\"",
        "\"/tmp/x\"",
        "\"/etc/passwd\"",
        "\"/srv/../etc/shadow\"",
        "\"/srv/\"",
        "\"/tmp/UPPER\"",
    ];
    match tool {
        "read_file" => &[
            ("path", PATH),
            (
                "max_bytes",
                &["1", "4096", "65536", "65537", "0", "100.0", "1e3"],
            ),
        ],
        "list_dir" => &[("path", PATH)],
        "search" => &[
            ("query", &["\"rust\"", "\"\"", "\"a b\""]),
            ("limit", &["10", "-1", "1.5"]),
        ],
        "write_file" => &[
            ("path", PATH),
            (
                "content",
                &[
                    "\"hello\"",
                    "\"\"",
                    "\"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\"",
                    "\"01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890\"",
                ],
            ),
        ],
        "delete_file" => &[("path", PATH)],
        "run_command" => &[
            ("command", &["\"ls\"", "\"rm -rf /\""]),
            ("timeout_s", &["1", "0.5"]),
        ],
        "deploy" => &[
            ("env", &["\"dev\"", "\"staging\"", "\"prod\"", "\"DEV\""]),
            ("replicas", &["1", "5", "6", "0", "3.0", "1e0", "-1"]),
            ("force", &["false", "true", "null"]),
        ],
        "kv" => &[
            ("op", &["\"get\"", "\"put\"", "\"del\"", "\"GET\"", "1"]),
            ("key", &["\"k\"", "\"user:1\""]),
            ("value", &["\"v\"", "1", "{\"a\":1}"]),
        ],
        "send_email" => &[("to", &["\"a@example.com\""]), ("body", &["\"hi\""])],
        _ => &[],
    }
}

/// Which duplicate key a message carries, and whether the decoy comes first (so a parser
/// that keeps the last copy sees the real value) or last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dup {
    pub field: DupField,
    pub decoy_first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DupField {
    Method,
    Id,
    Jsonrpc,
    Params,
    Name,
    Arguments,
    /// An argument's key.
    Argument,
}

/// What rendering needs to know about the sending client.
#[derive(Debug, Clone)]
pub struct Sender {
    pub name: String,
    pub stateless: bool,
    /// How many upstreams stand behind the gateway ([`Case::upstreams`]).
    pub upstreams: usize,
}

/// Escapes a string as JSON text, writing the characters whose bit is set in `mask` (the
/// first 32) as `\uXXXX` even when they need no escape.
pub fn json_string(s: &str, mask: u32) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        let forced = i < 32 && mask & (1 << i) != 0;
        match c {
            '"' if !forced => out.push_str("\\\""),
            '\\' if !forced => out.push_str("\\\\"),
            '\n' if !forced => out.push_str("\\n"),
            '\t' if !forced => out.push_str("\\t"),
            '\r' if !forced => out.push_str("\\r"),
            c if forced || (c as u32) < 0x20 => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The method's text after its spelling changes (escapes are applied when it is written).
pub fn spelled(method: &Method) -> String {
    let mut m = METHODS[method.base % METHODS.len()].to_owned();
    for s in &method.spell {
        m = match *s {
            Spell::Upper => m.to_ascii_uppercase(),
            Spell::Title => {
                let mut up = true;
                m.chars()
                    .map(|c| {
                        let r = if up { c.to_ascii_uppercase() } else { c };
                        up = c == '/';
                        r
                    })
                    .collect()
            }
            Spell::Flip(mask) => m
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i < 16 && mask & (1 << i) != 0 {
                        if c.is_ascii_uppercase() {
                            c.to_ascii_lowercase()
                        } else {
                            c.to_ascii_uppercase()
                        }
                    } else {
                        c
                    }
                })
                .collect(),
            Spell::Lead(w) => format!("{}{m}", WHITESPACE[w % WHITESPACE.len()]),
            Spell::Trail(w) => format!("{m}{}", WHITESPACE[w % WHITESPACE.len()]),
            Spell::Sep(k) => m.replace('/', SEPARATORS[k % SEPARATORS.len()]),
            Spell::LookAlike(pos, fullwidth) => {
                let n = m.chars().count().max(1);
                m.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i != pos % n {
                            return c;
                        }
                        let cyrillic = CYRILLIC
                            .iter()
                            .find(|(l, _)| *l == c.to_ascii_lowercase())
                            .map(|(_, r)| *r);
                        match (fullwidth, cyrillic) {
                            (false, Some(r)) => r,
                            _ if c.is_ascii_graphic() => {
                                char::from_u32(c as u32 + 0xfee0).unwrap_or(c)
                            }
                            _ => c,
                        }
                    })
                    .collect()
            }
            Spell::Insert(pos, k) => {
                let chars: Vec<char> = m.chars().collect();
                let at = pos % (chars.len() + 1);
                let mut out: String = chars[..at].iter().collect();
                out.push_str(INVISIBLE[k % INVISIBLE.len()]);
                out.extend(&chars[at..]);
                out
            }
        };
    }
    m
}

/// The text of a call's tool name; with several upstreams a known tool (and its near misses)
/// carries the prefix of upstream `upstream` of `upstreams`.
fn tool_name(tool: Tool, upstream: usize, upstreams: usize) -> String {
    use crate::naive::TOOL_NAMES;
    let exposed = |i: usize| {
        let name = TOOL_NAMES[i % TOOL_NAMES.len()];
        if upstreams > 1 {
            format!("{}{name}", prefix(upstream % upstreams))
        } else {
            name.to_owned()
        }
    };
    match tool {
        Tool::Known(i) => json_string(&exposed(i), 0),
        Tool::Variant(i, k) => {
            let name = exposed(i);
            let near = match k % 4 {
                0 => name.to_ascii_uppercase(),
                1 => format!("{name} "),
                2 => name.replacen('e', "\u{435}", 1).replacen('a', "\u{430}", 1),
                _ => name.replace('_', "-"),
            };
            json_string(&near, 0)
        }
        Tool::Unknown(i) => json_string(UNKNOWN_TOOLS[i % UNKNOWN_TOOLS.len()], 0),
        Tool::NotString(i) => NOT_STRING[i % NOT_STRING.len()].to_owned(),
    }
}

fn tool_of(tool: Tool) -> &'static str {
    use crate::naive::TOOL_NAMES;
    match tool {
        Tool::Known(i) | Tool::Variant(i, _) => TOOL_NAMES[i % TOOL_NAMES.len()],
        _ => "",
    }
}

fn args_text(call: &Call, dup_argument: Option<bool>) -> Option<String> {
    let own = tool_args(tool_of(call.tool));
    match &call.args {
        Args::Missing => None,
        Args::Null => Some("null".into()),
        Args::NotObject(i) => Some(ARGS_NOT_OBJECT[i % ARGS_NOT_OBJECT.len()].into()),
        Args::Object(pairs) => {
            let mut members: Vec<String> = Vec::new();
            let mut names: Vec<&str> = Vec::new();
            for (key, val) in pairs {
                let (name, values): (&str, &[&str]) = match *key {
                    Key::Own(i) if !own.is_empty() => own[i % own.len()],
                    Key::Own(i) | Key::Odd(i) => (ODD_KEYS[i % ODD_KEYS.len()], &[]),
                };
                // A key once: duplicates are `Dup`'s to make.
                if names.contains(&name) {
                    continue;
                }
                names.push(name);
                let value = match *val {
                    Val::Good(i) if !values.is_empty() => values[i % values.len()].to_owned(),
                    Val::Good(i) | Val::Odd(i) => ODD_VALUES[i % ODD_VALUES.len()].to_owned(),
                    Val::Long(n) => json_string(&"x".repeat(usize::from(n) % 6000), 0),
                };
                members.push(format!("{}:{value}", json_string(name, 0)));
            }
            if let (Some(decoy_first), Some(first)) = (dup_argument, members.first().cloned()) {
                // The same key again with another value.
                let key = first.split(':').next().unwrap_or("\"k\"").to_owned();
                let decoy = format!("{key}:\"decoy\"");
                if decoy_first {
                    members.insert(0, decoy);
                } else {
                    members.push(decoy);
                }
            }
            Some(format!("{{{}}}", members.join(",")))
        }
    }
}

fn meta_text(sender: &Sender) -> String {
    format!(
        "{{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientInfo\":{{\"name\":{},\"version\":\"1\"}},\"io.modelcontextprotocol/clientCapabilities\":{{}}}}",
        json_string(&sender.name, 0)
    )
}

/// Adds `member` (a `"key":value` text) to an object's text, first or last.
fn with_member(object: &str, member: &str, first: bool) -> String {
    let inner = object
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or("");
    match (inner.trim().is_empty(), first) {
        (true, _) => format!("{{{member}}}"),
        (false, true) => format!("{{{member},{inner}}}"),
        (false, false) => format!("{{{inner},{member}}}"),
    }
}

fn params_text(item: &Item, sender: &Sender) -> Option<String> {
    let dup = |f: DupField| item.dup.filter(|d| d.field == f).map(|d| d.decoy_first);
    let mut text = match &item.params {
        Params::None => None,
        Params::Empty => Some("{}".to_owned()),
        Params::Cursor => Some("{\"cursor\":\"c1\"}".to_owned()),
        Params::NotObject(i) => Some(NOT_OBJECT[i % NOT_OBJECT.len()].to_owned()),
        Params::Call(call) => {
            let mut members = vec![format!(
                "\"name\":{}",
                tool_name(call.tool, call.upstream, sender.upstreams)
            )];
            if let Some(args) = args_text(call, dup(DupField::Argument)) {
                members.push(format!("\"arguments\":{args}"));
            }
            if let Some(first) = dup(DupField::Name) {
                let decoy = "\"name\":\"read_file\"".to_owned();
                if first {
                    members.insert(0, decoy);
                } else {
                    members.push(decoy);
                }
            }
            if let Some(first) = dup(DupField::Arguments) {
                let decoy = "\"arguments\":{\"path\":\"/srv/a.txt\"}".to_owned();
                if first {
                    members.insert(0, decoy);
                } else {
                    members.push(decoy);
                }
            }
            Some(format!("{{{}}}", members.join(",")))
        }
    };
    if sender.stateless && item.meta {
        let meta = format!("\"_meta\":{}", meta_text(sender));
        text = match text {
            None => Some(format!("{{{meta}}}")),
            Some(t) if t.trim_start().starts_with('{') => Some(with_member(&t, &meta, false)),
            other => other,
        };
    }
    text
}

fn id_text(id: Id) -> Option<String> {
    match id {
        Id::None => None,
        Id::Int(n) => Some((n % 4 + 1).to_string()),
        Id::Str(i) => Some(json_string(STRING_IDS[i % STRING_IDS.len()], 0)),
        Id::Raw(i) => Some(RAW_IDS[i % RAW_IDS.len()].to_owned()),
    }
}

/// One message's text.
pub fn render_item(item: &Item, sender: &Sender) -> String {
    let mut members: Vec<String> = Vec::new();
    match item.jsonrpc {
        Jsonrpc::Good => members.push("\"jsonrpc\":\"2.0\"".into()),
        Jsonrpc::Missing => {}
        Jsonrpc::Wrong(i) => members.push(format!(
            "\"jsonrpc\":{}",
            WRONG_JSONRPC[i % WRONG_JSONRPC.len()]
        )),
    }
    if let Some(id) = id_text(item.id) {
        members.push(format!("\"id\":{id}"));
    }
    members.push(format!(
        "\"method\":{}",
        json_string(&spelled(&item.method), item.method.escape)
    ));
    if let Some(p) = params_text(item, sender) {
        members.push(format!("\"params\":{p}"));
    }
    let n = members.len().max(1);
    members.rotate_left(usize::from(item.order) % n);
    if let Some(d) = item.dup {
        let decoy = match d.field {
            DupField::Method => Some("\"method\":\"ping\"".to_owned()),
            DupField::Id => Some("\"id\":\"decoy\"".to_owned()),
            DupField::Jsonrpc => Some("\"jsonrpc\":\"2.0\"".to_owned()),
            DupField::Params => Some("\"params\":{}".to_owned()),
            _ => None,
        };
        if let Some(decoy) = decoy {
            if d.decoy_first {
                members.insert(0, decoy);
            } else {
                members.push(decoy);
            }
        }
    }
    format!("{{{}}}", members.join(","))
}

/// A message's bytes, as the client sends them.
pub fn render(body: &Body, sender: &Sender) -> Vec<u8> {
    let text: Vec<u8> = match &body.shape {
        Shape::Items {
            items,
            batch: false,
        } => items
            .first()
            .map(|item| render_item(item, sender).into_bytes())
            .unwrap_or_default(),
        Shape::Items { items, batch: true } => {
            let parts: Vec<String> = items.iter().map(|i| render_item(i, sender)).collect();
            format!("[{}]", parts.join(",")).into_bytes()
        }
        Shape::Raw(i) => RAW[i % RAW.len()].to_vec(),
        Shape::Text(t) => t.clone().into_bytes(),
    };
    match body.damage {
        Damage::None => text,
        Damage::Cut(permille) => {
            let at = text.len() * usize::from(permille.min(999)) / 1000;
            text[..at].to_vec()
        }
        Damage::Pad(extra) => {
            let target = LIMIT.saturating_add_signed(isize::from(extra));
            match text.first() {
                Some(b'{' | b'[') if text.len() < target => {
                    let mut out = Vec::with_capacity(target);
                    out.push(text[0]);
                    out.resize(target - text.len() + 1, b' ');
                    out.extend_from_slice(&text[1..]);
                    out
                }
                _ => text,
            }
        }
        Damage::Suffix(i) => {
            let mut out = text;
            out.extend_from_slice(SUFFIXES[i % SUFFIXES.len()].as_bytes());
            out
        }
        Damage::Around(i) => {
            let w = WHITESPACE[i % WHITESPACE.len()].as_bytes();
            let mut out = w.to_vec();
            out.extend_from_slice(&text);
            out.extend_from_slice(w);
            out
        }
    }
}

/// The `initialize` client `i` opens its session with.
pub fn initialize(i: usize, version: &str) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":\"hs-c{i}\",\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"{version}\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"{}\",\"version\":\"1\"}}}}}}",
        client_name(i)
    )
}

/// The notification that ends the handshake.
pub const INITIALIZED: &str = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";

/// The `ping` a client sends after its steps: once it is answered, everything the client sent
/// before it has been handled.
pub fn barrier(i: usize, round: usize, sender: &Sender) -> String {
    // The router of several upstreams answers `ping` itself; `logging/setLevel` goes to every
    // upstream and is answered once each has answered (each reads its messages in order).
    let (method, level) = if sender.upstreams > 1 {
        ("logging/setLevel", "\"level\":\"debug\"")
    } else {
        ("ping", "")
    };
    let params = match (sender.stateless, level.is_empty()) {
        (true, true) => format!(",\"params\":{{\"_meta\":{}}}", meta_text(sender)),
        (true, false) => format!(",\"params\":{{{level},\"_meta\":{}}}", meta_text(sender)),
        (false, true) => String::new(),
        (false, false) => format!(",\"params\":{{{level}}}"),
    };
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":\"barrier-c{i}-{round}\",\"method\":\"{method}\"{params}}}"
    )
}

// Strategies. Every choice has a plain default (a well-formed request with an integer id,
// a known tool, valid arguments, no damage) and the odd alternatives come as an `Option` around
// it: proptest shrinks an `Option` to `None` directly, so a counterexample sheds every oddity
// it does not need (a `prop_oneof!` only steps back one alternative at a time, and stops when
// that one does not fail).

/// How often the odd alternatives are drawn: 1 as written, 0 for plain traffic only
/// (`--plain`: well-formed requests with valid ids, one message at a time or overlapping, from
/// several clients and grants; the baseline of what checking costs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Odds(pub f64);

impl Odds {
    /// The probability `x` scaled (proptest refuses a probability of 0: the least is 1e-12).
    fn p(self, x: f64) -> f64 {
        (x * self.0).clamp(1e-12, 1.0)
    }
}

/// `Some(odd)` with probability `p`, else the default.
fn or_plain<T: std::fmt::Debug + Clone + 'static>(
    p: f64,
    odd: impl Strategy<Value = T> + 'static,
    plain: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = T> {
    (plain, prop::option::weighted(p, odd)).prop_map(|(plain, odd)| odd.unwrap_or(plain))
}

fn spell() -> impl Strategy<Value = Spell> {
    prop_oneof![
        3 => Just(Spell::Upper),
        3 => Just(Spell::Title),
        2 => any::<u16>().prop_map(Spell::Flip),
        2 => (0..WHITESPACE.len()).prop_map(Spell::Lead),
        3 => (0..WHITESPACE.len()).prop_map(Spell::Trail),
        2 => (0..SEPARATORS.len()).prop_map(Spell::Sep),
        2 => (0..12usize, any::<bool>()).prop_map(|(p, f)| Spell::LookAlike(p, f)),
        2 => (0..12usize, 0..INVISIBLE.len()).prop_map(|(p, k)| Spell::Insert(p, k)),
    ]
}

fn method(k: Odds) -> impl Strategy<Value = Method> {
    // Other methods, spelled right, are plain traffic too.
    let base = or_plain(0.3, 0..METHODS.len(), Just(0usize));
    let spells = or_plain(
        k.p(0.4),
        prop::collection::vec(spell(), 1..=2),
        Just(Vec::new()),
    );
    let escape = or_plain(k.p(0.15), any::<u32>(), Just(0u32));
    (base, spells, escape).prop_map(|(base, spell, escape)| Method {
        base,
        spell,
        escape,
    })
}

fn id(k: Odds) -> impl Strategy<Value = Id> {
    let odd = prop_oneof![
        3 => Just(Id::None),
        2 => (0..STRING_IDS.len()).prop_map(Id::Str),
        2 => (0..RAW_IDS.len()).prop_map(Id::Raw),
    ];
    or_plain(k.p(0.45), odd, (0..4u8).prop_map(Id::Int))
}

fn val(k: Odds) -> impl Strategy<Value = Val> {
    let odd = prop_oneof![
        2 => (0..ODD_VALUES.len()).prop_map(Val::Odd),
        1 => any::<u16>().prop_map(Val::Long),
    ];
    or_plain(k.p(0.2), odd, (0..8usize).prop_map(Val::Good))
}

fn key(k: Odds) -> impl Strategy<Value = Key> {
    or_plain(
        k.p(0.1),
        (0..ODD_KEYS.len()).prop_map(Key::Odd),
        (0..3usize).prop_map(Key::Own),
    )
}

fn args(k: Odds) -> impl Strategy<Value = Args> {
    let odd = prop_oneof![
        Just(Args::Missing),
        Just(Args::Null),
        (0..ARGS_NOT_OBJECT.len()).prop_map(Args::NotObject),
    ];
    or_plain(
        k.p(0.15),
        odd,
        prop::collection::vec((key(k), val(k)), 0..=3).prop_map(Args::Object),
    )
}

fn tool(k: Odds) -> impl Strategy<Value = Tool> {
    use crate::naive::TOOL_NAMES;
    let odd = prop_oneof![
        2 => (0..TOOL_NAMES.len(), 0..4usize).prop_map(|(i, k)| Tool::Variant(i, k)),
        1 => (0..UNKNOWN_TOOLS.len()).prop_map(Tool::Unknown),
        1 => (0..NOT_STRING.len()).prop_map(Tool::NotString),
    ];
    or_plain(k.p(0.25), odd, (0..TOOL_NAMES.len()).prop_map(Tool::Known))
}

fn params(k: Odds) -> impl Strategy<Value = Params> {
    let odd = prop_oneof![
        2 => Just(Params::None),
        1 => Just(Params::Empty),
        1 => Just(Params::Cursor),
        1 => (0..NOT_OBJECT.len()).prop_map(Params::NotObject),
    ];
    or_plain(
        k.p(0.3),
        odd,
        (tool(k), 0..4usize, args(k)).prop_map(|(tool, upstream, args)| {
            Params::Call(Call {
                tool,
                upstream,
                args,
            })
        }),
    )
}

fn dup(k: Odds) -> impl Strategy<Value = Option<Dup>> {
    let field = prop_oneof![
        Just(DupField::Method),
        Just(DupField::Id),
        Just(DupField::Jsonrpc),
        Just(DupField::Params),
        Just(DupField::Name),
        Just(DupField::Arguments),
        Just(DupField::Argument),
    ];
    prop::option::weighted(
        k.p(0.07),
        (field, any::<bool>()).prop_map(|(field, decoy_first)| Dup { field, decoy_first }),
    )
}

fn item(k: Odds) -> impl Strategy<Value = Item> {
    let jsonrpc = or_plain(
        k.p(0.08),
        prop_oneof![
            Just(Jsonrpc::Missing),
            (0..WRONG_JSONRPC.len()).prop_map(Jsonrpc::Wrong),
        ],
        Just(Jsonrpc::Good),
    );
    let order = or_plain(k.p(0.15), 1..4u8, Just(0u8));
    // Shrinks towards the envelope being there.
    let no_meta = prop::bool::weighted(k.p(0.08));
    (method(k), id(k), params(k), jsonrpc, dup(k), order, no_meta).prop_map(
        |(method, id, params, jsonrpc, dup, order, no_meta)| Item {
            method,
            id,
            params,
            jsonrpc,
            dup,
            order,
            meta: !no_meta,
        },
    )
}

fn body(k: Odds) -> impl Strategy<Value = Body> {
    let items = (
        prop::collection::vec(item(k), 1..=4),
        prop::bool::weighted(k.p(0.3)),
    )
        .prop_map(|(items, batch)| Shape::Items { items, batch });
    let shape = or_plain(k.p(0.07), (0..RAW.len()).prop_map(Shape::Raw), items);
    let damage = or_plain(
        k.p(0.15),
        prop_oneof![
            (1..1000u16).prop_map(Damage::Cut),
            (-2..=2i8).prop_map(Damage::Pad),
            (0..SUFFIXES.len()).prop_map(Damage::Suffix),
            (0..WHITESPACE.len()).prop_map(Damage::Around),
        ],
        Just(Damage::None),
    );
    (shape, damage).prop_map(|(shape, damage)| Body { shape, damage })
}

fn step(k: Odds) -> impl Strategy<Value = Step> {
    let token = prop::option::weighted(k.p(0.08), 0..GRANTS.len());
    // Shrinks towards waiting for the answer.
    let overlap = prop::bool::weighted(0.25);
    (0..3usize, body(k), overlap, token).prop_map(|(client, body, overlap, token)| Step {
        client,
        body,
        wait: !overlap,
        token,
    })
}

fn client() -> impl Strategy<Value = ClientSpec> {
    // Clients share a grant half the time: over HTTP, stateless clients of one grant share
    // one gateway session, where their answers can cross.
    let grant = prop_oneof![Just(0usize), 0..GRANTS.len()];
    (grant, 0..VERSIONS.len()).prop_map(|(grant, version)| ClientSpec { grant, version })
}

/// Cases over the given (front, upstream) pairs, with up to `max_steps` messages each, odd
/// choices drawn as often as `k` says.
pub fn cases(
    pairs: Vec<(Transport, Transport)>,
    max_steps: usize,
    k: Odds,
    upstreams: usize,
) -> impl Strategy<Value = Case> {
    let pair = (0..pairs.len().max(1)).prop_map(move |i| {
        pairs
            .get(i)
            .copied()
            .unwrap_or((Transport::Http, Transport::Http))
    });
    (
        pair,
        prop::collection::vec(client(), 1..=3),
        prop::collection::vec(step(k), 1..=max_steps.max(1)),
    )
        .prop_map(move |((front, upstream), clients, steps)| Case {
            front,
            upstream,
            upstreams: upstreams.max(1),
            clients,
            steps,
        })
}

/// Bytes as a person can read and replay them: the text when it is printable ASCII, else a
/// Rust byte-string literal (so a zero-width space, a look-alike letter, a line break or a
/// byte that is not UTF-8 shows, and the bytes stay exact).
pub fn show(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!("b\"{}\"", bytes.escape_ascii())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sender() -> Sender {
        Sender {
            name: "fuzz-c0".into(),
            stateless: false,
            upstreams: 1,
        }
    }

    /// Spellings differ from `tools/call` as named; escapes change the text, not the value.
    #[test]
    fn spellings_and_escapes() {
        let m = |spell: Vec<Spell>| {
            spelled(&Method {
                base: 0,
                spell,
                escape: 0,
            })
        };
        assert_eq!(m(vec![Spell::Title]), "Tools/Call");
        assert_eq!(m(vec![Spell::Upper]), "TOOLS/CALL");
        assert_eq!(m(vec![Spell::Trail(0)]), "tools/call ");
        assert_eq!(m(vec![Spell::Sep(0)]), "tools.call");
        assert_eq!(m(vec![Spell::LookAlike(1, false)]), "t\u{43e}ols/call");
        assert_eq!(m(vec![Spell::Insert(5, 0)]), "tools\u{200b}/call");
        assert_eq!(
            json_string("tools/call", 0b11),
            "\"\\u0074\\u006fols/call\""
        );
        let v: Value = serde_json::from_str(&json_string("tools/call", 0b11)).unwrap();
        assert_eq!(v, "tools/call");
        assert_eq!(json_string("a\u{1f600}", 0b10), "\"a\\ud83d\\ude00\"");
    }

    /// A rendered item parses (leniently) to the message it describes; a duplicate key keeps
    /// the decoy first or last as asked.
    #[test]
    fn items_render_to_the_messages_they_describe() {
        let item = Item {
            method: Method {
                base: 0,
                spell: vec![],
                escape: 0,
            },
            id: Id::Int(0),
            params: Params::Call(Call {
                tool: Tool::Known(0),
                upstream: 0,
                args: Args::Object(vec![(Key::Own(0), Val::Good(0))]),
            }),
            jsonrpc: Jsonrpc::Good,
            dup: None,
            order: 0,
            meta: true,
        };
        assert_eq!(
            render_item(&item, &sender()),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a.txt"}}}"#
        );
        let stateless = Sender {
            name: "fuzz-c1".into(),
            stateless: true,
            upstreams: 1,
        };
        let v: Value = serde_json::from_str(&render_item(&item, &stateless)).unwrap();
        assert_eq!(
            v["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
            "fuzz-c1"
        );
        let mut dup = item.clone();
        dup.dup = Some(Dup {
            field: DupField::Method,
            decoy_first: false,
        });
        let text = render_item(&dup, &sender());
        assert!(text.ends_with(",\"method\":\"ping\"}"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["method"], "ping");
    }

    /// A message is shown as its text when that is printable ASCII, else as exact bytes with
    /// every other byte escaped (an invisible character must show).
    #[test]
    fn shown_bytes_are_exact_and_visible() {
        assert_eq!(show(br#"{"id":1}"#), r#"{"id":1}"#);
        assert_eq!(
            show("{\"m\":\"\u{200b}x\"}\n".as_bytes()),
            r#"b"{\"m\":\"\xe2\x80\x8bx\"}\n""#
        );
        assert_eq!(show(b""), r#"b"""#);
    }

    /// Padding reaches the limit exactly, plus or minus the bytes asked.
    #[test]
    fn padding_reaches_the_limit() {
        let body = |extra| Body {
            shape: Shape::Raw(3),
            damage: Damage::Pad(extra),
        };
        for extra in -2..=2i8 {
            let bytes = render(&body(extra), &sender());
            assert_eq!(bytes.len(), LIMIT.saturating_add_signed(isize::from(extra)));
            let _: Value = serde_json::from_slice(&bytes).unwrap();
        }
    }
}
