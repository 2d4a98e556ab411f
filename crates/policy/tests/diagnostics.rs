//! What a diagnostic tells a person: the file it names, a coloured rendering for terminals, and
//! where the quoted-excerpt rendering gives way to the compact one (a labelled line of more than
//! 200 characters is not quoted, so a minified or hostile file cannot flood the terminal).

#![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

use tollgate_policy::diag::Diagnostic;
use tollgate_policy::source::SourceFile;

/// A two-line JSON text whose second line is `len` characters long, and the span of that line.
fn with_second_line(len: usize) -> (SourceFile, std::ops::Range<usize>) {
    let line = format!("\"{}\"", "x".repeat(len - 2));
    let text = format!("[\n{line}\n]");
    let start = 2;
    (
        SourceFile::new("policy.json", &text),
        start..start + line.len(),
    )
}

#[test]
fn a_diagnostic_names_the_file_it_was_made_for() {
    let file = SourceFile::new("team/policy.json", "{}");
    let d = Diagnostic::error(&file, "policy::test", "something is wrong");
    assert_eq!(d.file(), "team/policy.json");
    assert_eq!(
        Diagnostic::about_file("gone.json", "policy::io", "cannot read").file(),
        "gone.json"
    );
}

#[test]
fn the_colour_rendering_says_what_the_plain_one_says_with_escape_codes() {
    let file = SourceFile::new("policy.json", "{\"version\": 2}");
    let d = Diagnostic::error(&file, "policy::version", "the version is `2`")
        .with_label(12..13, "here")
        .with_help("write \"1\"");
    let color = d.render_color();
    let plain = d.render_plain();
    assert!(color.contains("\u{1b}["), "no escape codes: {color:?}");
    assert!(
        !plain.contains("\u{1b}["),
        "escape codes in plain: {plain:?}"
    );
    for part in [
        "policy::version",
        "the version is `2`",
        "here",
        "write \"1\"",
    ] {
        assert!(color.contains(part), "{part:?} missing from {color:?}");
    }
}

#[test]
fn a_labelled_line_of_200_characters_is_quoted_and_one_of_201_is_not() {
    for (len, quoted) in [(199, true), (200, true), (201, false), (5000, false)] {
        let (file, span) = with_second_line(len);
        let out = Diagnostic::error(&file, "policy::test", "odd value")
            .with_label(span, "this value")
            .render_plain();
        let excerpt = "x".repeat(len - 2);
        assert_eq!(
            out.contains(&excerpt),
            quoted,
            "a line of {len} characters: quoted should be {quoted}: {out}"
        );
        if !quoted {
            assert!(out.contains("policy.json:2:1"), "no position: {out}");
        }
    }
}

/// A rule that spells a tool in fullwidth forms (`ｌｉｓｔ＿…`, as pasted from some editors) is
/// read through its ASCII skeleton: the warning names the tool it looks like.
#[test]
fn a_tool_name_in_fullwidth_letters_is_suggested_as_its_ascii_twin() {
    use tollgate_policy::lint::KnownTool;
    use tollgate_policy::{Policy, RiskClass};
    let fullwidth: String = "list_k8s_resources"
        .chars()
        .map(|c| char::from_u32(u32::from(c) + 0xFEE0).unwrap())
        .collect();
    let text = format!(
        r#"{{"version":"1","default":"allow","tools":{{"{fullwidth}":{{"action":"deny"}}}}}}"#
    );
    let policy = Policy::parse("policy.json", &text).unwrap();
    let known = [KnownTool::new(
        "list_k8s_resources",
        Some(RiskClass::Read),
        &[],
    )];
    let warnings = policy.lint(&known);
    let help: Vec<_> = warnings.iter().filter_map(|d| d.help.clone()).collect();
    assert!(
        help.iter()
            .any(|h| h == "a look-alike character? did you mean `list_k8s_resources`?"),
        "{help:?}"
    );
}
