//! The psql meta-commands a plain dump holds, found the way psql's own lexer finds them:
//! a backslash outside strings, quoted identifiers, dollar quotes, comments and COPY data.
//! psql runs such a line on the restoring machine (`\!` is a shell), so a plain dump may
//! hold only what pg_dump writes itself. What psql could read differently from this lexer
//! (a NUL byte, standard_conforming_strings off, a client encoding whose characters can
//! hold a quote or a backslash, a string or a number whose end depends on those or on
//! psql's version) is refused too: a check that cannot judge a file must not pass it.

use std::path::{Path, PathBuf};

/// A psql meta-command: its 1-based line and its text up to the end of that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCommand {
    pub line: usize,
    pub text: String,
    /// Whether the backslash is the line's first character, where pg_dump writes its own.
    pub at_line_start: bool,
}

impl MetaCommand {
    /// `\restrict KEY` and `\unrestrict KEY` alone on their line: the only meta-commands
    /// pg_dump writes into a dump psql can restore in one transaction.
    pub fn is_pg_dumps_own(&self) -> bool {
        let mut words = self.text.split_ascii_whitespace();
        let (Some(name), Some(key), None) = (words.next(), words.next(), words.next()) else {
            return false;
        };
        self.at_line_start
            && matches!(name, "\\restrict" | "\\unrestrict")
            && key.bytes().all(|b| b.is_ascii_alphanumeric())
    }
}

/// Why a plain dump is refused before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum MetaCommandError {
    #[error("{}:{line}: `\\connect` is in a dump made with pg_dump --create: it creates and switches databases, which one transaction into the chosen target cannot do; nothing was restored. Dump without --create", path.display())]
    Connect { path: PathBuf, line: usize },
    #[error("{}:{line}: psql meta-command `{text}` is not one pg_dump writes (psql would run it on this machine); nothing was restored. A plain dump may hold only SQL, COPY data and pg_dump's own \\restrict and \\unrestrict lines", path.display())]
    Refused {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{}:{line}: {doubt}; psql could read the file differently from the check for meta-commands, so nothing was restored. pg_dump writes no such thing: restore a dump pg_dump wrote, or take one with --format custom", path.display())]
    CannotJudge {
        path: PathBuf,
        line: usize,
        doubt: Doubt,
    },
}

/// Something in a plain dump psql could lex differently from `meta_commands`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Doubt {
    /// psql drops the rest of a line after a NUL byte.
    #[error("a NUL byte (psql drops the rest of its line)")]
    Nul,
    /// Any statement naming the setting but pg_dump's `SET standard_conforming_strings = on`.
    #[error("a statement that sets standard_conforming_strings (psql reads backslashes in strings differently when it is off)")]
    ConformingStrings,
    /// A client encoding other than UTF8, SQL_ASCII or LATIN*, or a `RESET ALL`.
    #[error("a statement that changes client_encoding to something other than UTF8, SQL_ASCII or LATIN1-10 (in SJIS, BIG5, GBK, UHC or GB18030 a quote or backslash byte can be part of a character)")]
    ClientEncoding,
    /// `RESET ALL` brings back the session's defaults, which the target may have set.
    #[error("RESET ALL (it brings back the target's defaults for standard_conforming_strings and client_encoding)")]
    ResetAll,
    /// A plain string with a backslash before a quote ends in one place with
    /// standard_conforming_strings on and in another with it off.
    #[error("a string with a backslash before a quote (where it ends depends on standard_conforming_strings)")]
    BackslashQuote,
    /// psql 15 ends a number's trailing letters at `$`, psql 16 does not: a dollar quote
    /// starts there for one and not the other.
    #[error(
        "a number followed by letters and a dollar quote (psql 15 and 16 split it differently)"
    )]
    NumberDollar,
}

/// What the lexer meets, in order: meta-commands and doubts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Command(MetaCommand),
    Doubt { line: usize, doubt: Doubt },
}

/// The lines of pg_dump's own meta-commands in `script`, or the first other one, named.
pub fn check_plain_dump(path: &Path, script: &str) -> Result<Vec<usize>, MetaCommandError> {
    let mut own = Vec::new();
    // pg_dump writes one key, `\restrict` and `\unrestrict` taking turns.
    let mut key: Option<String> = None;
    let mut restricted = false;
    for event in lex(script) {
        let command = match event {
            Event::Command(command) => command,
            Event::Doubt { line, doubt } => {
                return Err(MetaCommandError::CannotJudge {
                    path: path.to_path_buf(),
                    line,
                    doubt,
                })
            }
        };
        if command.is_pg_dumps_own() {
            let mut words = command.text.split_ascii_whitespace();
            let (name, this_key) = (words.next(), words.next().map(str::to_string));
            let in_turn = (name == Some("\\restrict")) != restricted;
            if in_turn
                && key.get_or_insert_with(|| this_key.clone().unwrap_or_default())
                    == &this_key.unwrap_or_default()
            {
                restricted = !restricted;
                own.push(command.line);
                continue;
            }
        }
        let name = command.text.split_ascii_whitespace().next().unwrap_or("");
        return Err(match name {
            "\\connect" | "\\c" if command.at_line_start => MetaCommandError::Connect {
                path: path.to_path_buf(),
                line: command.line,
            },
            _ => MetaCommandError::Refused {
                path: path.to_path_buf(),
                line: command.line,
                text: command.text,
            },
        });
    }
    Ok(own)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Code,
    /// `'...'`; with `escapes`, an `E'...'` string where a backslash escapes a quote.
    Quoted {
        escapes: bool,
    },
    Identifier,
    Dollar(String),
    Comment(usize),
}

/// What psql knows of the statement being read: enough to tell a `COPY ... FROM stdin`
/// (whose data lines follow it) and to end statements where psql ends them.
#[derive(Debug, Default)]
struct Statement {
    tokens: usize,
    first: String,
    /// The first `from` or `to` at parenthesis depth 0, and the token after it.
    direction: Option<String>,
    after_direction: Option<String>,
    /// psql's heuristic for `CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC`.
    leading: Vec<char>,
    paren_depth: usize,
    begin_depth: usize,
    /// Its text but comments, strings and bodies included (they can run), and its
    /// first line, to judge settings it changes.
    text: Vec<u8>,
    line: usize,
}

impl Statement {
    fn push_text(&mut self, bytes: &[u8], line: usize) {
        if self.text.iter().all(u8::is_ascii_whitespace) {
            self.line = line;
        }
        self.text.extend_from_slice(bytes);
    }

    /// The setting this statement changes that psql's lexer depends on, if it changes
    /// one other than the way pg_dump does.
    fn doubt(&self) -> Option<Doubt> {
        let lower = String::from_utf8_lossy(&self.text)
            .to_ascii_lowercase()
            .replace('=', " = ");
        let words: Vec<&str> = lower.split_ascii_whitespace().collect();
        let set: &[&str] = match words.as_slice() {
            ["set", "session" | "local", rest @ ..] | ["set", rest @ ..] => rest,
            _ => &[],
        };
        let value = |v: &str| v.trim_matches('\'').replace(['_', '-'], "");
        if lower.contains("standard_conforming_strings") {
            let on = matches!(
                set,
                ["standard_conforming_strings", "=" | "to", v] if matches!(value(v).as_str(), "on" | "true")
            );
            return (!on).then_some(Doubt::ConformingStrings);
        }
        if lower.contains("client_encoding") || matches!(set, ["names", ..]) {
            let safe = |v: &str| {
                let v = value(v);
                matches!(v.as_str(), "utf8" | "unicode" | "sqlascii")
                    || v.strip_prefix("latin")
                        .and_then(|n| n.parse::<u8>().ok())
                        .is_some_and(|n| (1..=10).contains(&n))
            };
            let ok = match set {
                ["client_encoding", "=" | "to", v] | ["names", v] => safe(v),
                _ => false,
            };
            return (!ok).then_some(Doubt::ClientEncoding);
        }
        (words.first() == Some(&"reset") && words.contains(&"all")).then_some(Doubt::ResetAll)
    }

    fn token(&mut self, word: Option<&str>) {
        let lower = word.map(str::to_ascii_lowercase);
        if self.tokens == 0 {
            self.first = lower.clone().unwrap_or_default();
        }
        self.tokens += 1;
        let Some(lower) = lower else {
            if self.direction.is_some() && self.after_direction.is_none() {
                self.after_direction = Some(String::new());
            }
            return;
        };
        if self.direction.is_some() && self.after_direction.is_none() {
            self.after_direction = Some(lower.clone());
        } else if self.direction.is_none()
            && self.paren_depth == 0
            && (lower == "from" || lower == "to")
        {
            self.direction = Some(lower.clone());
        }
        if matches!(
            lower.as_str(),
            "create" | "function" | "procedure" | "or" | "replace"
        ) && self.leading.len() < 4
            && self.leading.len() + 1 == self.tokens
        {
            self.leading.push(lower.chars().next().unwrap_or(' '));
        }
        let routine = matches!(
            self.leading.as_slice(),
            ['c', 'f' | 'p', ..] | ['c', 'o', 'r', 'f' | 'p', ..]
        );
        if routine && self.paren_depth == 0 {
            match lower.as_str() {
                "begin" => self.begin_depth += 1,
                "case" if self.begin_depth >= 1 => self.begin_depth += 1,
                "end" => self.begin_depth = self.begin_depth.saturating_sub(1),
                _ => {}
            }
        }
    }

    fn copies_from_stdin(&self) -> bool {
        self.first == "copy"
            && self.direction.as_deref() == Some("from")
            && self.after_direction.as_deref() == Some("stdin")
    }
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The `$tag$` starting at `bytes[i]`, if one does.
fn dollar_tag(bytes: &[u8], i: usize) -> Option<&[u8]> {
    let mut j = i + 1;
    if j < bytes.len() && ident_start(bytes[j]) {
        j += 1;
        while j < bytes.len() && (ident_start(bytes[j]) || bytes[j].is_ascii_digit()) {
            j += 1;
        }
    }
    (j < bytes.len() && bytes[j] == b'$').then(|| &bytes[i..=j])
}

/// Where the number (or parameter's digits) starting at `bytes[i]` ends, and whether
/// psql versions disagree about it. The letters after a number are one (junk) token with
/// it (`1e'x'` is a plain string after it), but a `$` after digits starts a new token
/// (`1$a$` is `1` and a dollar quote); after letters, psql 15 ends the junk at `$` and
/// psql 16 does not, so a dollar quote there is a doubt.
fn number_end(bytes: &[u8], mut i: usize) -> (usize, bool) {
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_' || bytes[i] == b'.') {
        i += 1;
    }
    let junk = i;
    while i < bytes.len() && ident_cont(bytes[i]) && bytes[i] != b'$' {
        i += 1;
    }
    if i == junk || bytes.get(i) != Some(&b'$') {
        return (i, false);
    }
    if dollar_tag(bytes, i).is_some() {
        return (i, true);
    }
    while i < bytes.len() && ident_cont(bytes[i]) {
        i += 1;
    }
    (i, false)
}

/// Every meta-command psql would run in `script`, in order.
pub fn meta_commands(script: &str) -> Vec<MetaCommand> {
    lex(script)
        .into_iter()
        .filter_map(|event| match event {
            Event::Command(command) => Some(command),
            Event::Doubt { .. } => None,
        })
        .collect()
}

/// The meta-commands psql would run in `script` and what psql could read differently,
/// in order.
fn lex(script: &str) -> Vec<Event> {
    let mut found = Vec::new();
    let mut state = State::Code;
    let mut statement = Statement::default();
    let mut copies_pending = 0usize;
    for (index, line) in script.split('\n').enumerate() {
        let number = index + 1;
        // COPY data too: psql finds the end of the data in the line before the NUL.
        if line.contains('\0') {
            found.push(Event::Doubt {
                line: number,
                doubt: Doubt::Nul,
            });
        }
        if copies_pending > 0 {
            if line.strip_suffix('\r').unwrap_or(line) == "\\." {
                copies_pending -= 1;
            }
            continue;
        }
        let bytes = line.as_bytes();
        let mut i = 0;
        // Where the statement's text not yet kept starts, on this line; none in a comment.
        let mut mark = (!matches!(state, State::Comment(_))).then_some(0);
        while i < bytes.len() {
            let b = bytes[i];
            match &mut state {
                State::Comment(depth) => {
                    if bytes[i..].starts_with(b"/*") {
                        *depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        *depth -= 1;
                        if *depth == 0 {
                            state = State::Code;
                            mark = Some(i + 2);
                        }
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                State::Quoted { escapes } => {
                    let next = bytes.get(i + 1);
                    let doubled = b == b'\'' && next == Some(&b'\'');
                    if (*escapes && b == b'\\') || doubled {
                        i += 2;
                    } else if b == b'\\' && next == Some(&b'\\') {
                        // Two backslashes: one character either way.
                        i += 2;
                    } else if b == b'\\' && next == Some(&b'\'') {
                        found.push(Event::Doubt {
                            line: number,
                            doubt: Doubt::BackslashQuote,
                        });
                        i += 1;
                    } else if b == b'\'' {
                        // psql lexes line by line, so a string continued on the next
                        // line (`E'a'` newline `'b'`) starts afresh as a plain one there.
                        state = State::Code;
                        i += 1;
                    } else {
                        i += 1;
                    }
                }
                State::Identifier => {
                    if b == b'"' && bytes.get(i + 1) == Some(&b'"') {
                        i += 2;
                    } else {
                        if b == b'"' {
                            state = State::Code;
                        }
                        i += 1;
                    }
                }
                State::Dollar(tag) => {
                    if bytes[i..].starts_with(tag.as_bytes()) {
                        i += tag.len();
                        state = State::Code;
                    } else {
                        i += 1;
                    }
                }
                State::Code => {
                    if b.is_ascii_whitespace() {
                        i += 1;
                        continue;
                    }
                    if bytes[i..].starts_with(b"--") || bytes[i..].starts_with(b"/*") {
                        if let Some(from) = mark.take() {
                            statement.push_text(&bytes[from..i], number);
                        }
                        if bytes[i] == b'-' {
                            break;
                        }
                        state = State::Comment(1);
                        i += 2;
                        continue;
                    }
                    match b {
                        b'\\' => {
                            found.push(Event::Command(MetaCommand {
                                line: number,
                                text: line[i..].trim_end().to_string(),
                                at_line_start: i == 0,
                            }));
                            i = bytes.len();
                        }
                        b'\'' => {
                            statement.token(None);
                            state = State::Quoted { escapes: false };
                            i += 1;
                        }
                        b'"' => {
                            statement.token(Some("\"\""));
                            state = State::Identifier;
                            i += 1;
                        }
                        b'$' => match dollar_tag(bytes, i) {
                            Some(tag) => {
                                statement.token(None);
                                i += tag.len();
                                state = State::Dollar(String::from_utf8_lossy(tag).into_owned());
                            }
                            None => {
                                let (end, doubt) = number_end(bytes, i + 1);
                                if doubt {
                                    found.push(Event::Doubt {
                                        line: number,
                                        doubt: Doubt::NumberDollar,
                                    });
                                }
                                i = end;
                                statement.token(None);
                            }
                        },
                        b if ident_start(b) => {
                            let start = i;
                            while i < bytes.len() && ident_cont(bytes[i]) {
                                i += 1;
                            }
                            let word = &line[start..i];
                            if bytes.get(i) == Some(&b'\'') {
                                statement.token(None);
                                state = State::Quoted {
                                    escapes: word.eq_ignore_ascii_case("e"),
                                };
                                i += 1;
                            } else {
                                statement.token(Some(word));
                            }
                        }
                        b if b.is_ascii_digit() => {
                            let (end, doubt) = number_end(bytes, i);
                            if doubt {
                                found.push(Event::Doubt {
                                    line: number,
                                    doubt: Doubt::NumberDollar,
                                });
                            }
                            i = end;
                            statement.token(None);
                        }
                        b'(' => {
                            statement.token(None);
                            statement.paren_depth += 1;
                            i += 1;
                        }
                        b')' => {
                            statement.token(None);
                            statement.paren_depth = statement.paren_depth.saturating_sub(1);
                            i += 1;
                        }
                        b';' if statement.paren_depth == 0 && statement.begin_depth == 0 => {
                            if let Some(from) = mark {
                                statement.push_text(&bytes[from..i], number);
                            }
                            if let Some(doubt) = statement.doubt() {
                                found.push(Event::Doubt {
                                    line: statement.line,
                                    doubt,
                                });
                            }
                            if statement.copies_from_stdin() {
                                copies_pending += 1;
                            }
                            statement = Statement::default();
                            i += 1;
                            mark = Some(i);
                        }
                        _ => {
                            statement.token(None);
                            i += 1;
                        }
                    }
                }
            }
        }
        if let Some(from) = mark {
            statement.push_text(&bytes[from.min(bytes.len())..], number);
            statement.push_text(b" ", number);
        }
    }
    if let Some(doubt) = statement.doubt() {
        found.push(Event::Doubt {
            line: statement.line,
            doubt,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(script: &str) -> Vec<(usize, String)> {
        meta_commands(script)
            .into_iter()
            .map(|c| (c.line, c.text))
            .collect()
    }

    #[test]
    fn pg_dumps_own_lines_are_found_and_allowed() {
        let script = "--\n\\restrict abc123\nSET x = 1;\n\\unrestrict abc123\n";
        let found = meta_commands(script);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(MetaCommand::is_pg_dumps_own));
        assert_eq!(
            check_plain_dump(Path::new("d.sql"), script).unwrap(),
            [2, 4]
        );
    }

    #[test]
    fn copy_data_is_not_lexed_but_what_follows_it_is() {
        let script = "COPY public.t (a) FROM stdin;\n\\! not a command: data\n'\n\\.\n\\! id\n";
        assert_eq!(lines(script), [(5, "\\! id".to_string())]);
        // Data ends only at a line that is exactly `\.`.
        let script =
            "copy t from STDIN with (format csv);\n\\.x\n \\.\n\\.\r\nselect 1; \\o |cat\n";
        assert_eq!(lines(script), [(5, "\\o |cat".to_string())]);
    }

    #[test]
    fn a_copy_to_or_a_table_named_stdin_has_no_data_lines() {
        let script = "COPY (SELECT a FROM stdin) TO stdout;\n\\! id\n";
        assert_eq!(lines(script), [(2, "\\! id".to_string())]);
    }

    #[test]
    fn backslashes_in_strings_comments_and_bodies_are_not_commands() {
        let script = "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $body$\n\\! not a command\nBEGIN RETURN '\\'; END $body$;\n\
            SELECT 'a\\', \"x\\\"\"y\", $$\n\\i x$$, E'\\'\n\\! still inside', x$y$z;\n\
            /* \\! /* nested */ \\! */ -- \\! comment\n";
        assert_eq!(lines(script), Vec::<(usize, String)>::new());
    }

    #[test]
    fn psql_ends_a_string_at_its_line_and_a_number_swallows_an_e() {
        // Checked against psql 15: both `\echo`s below run.
        let script = "SELECT E'a'\n'\\' \\! id';\nselect 1ee'\\' \\! id';\n";
        assert_eq!(
            lines(script),
            [(2, "\\! id';".to_string()), (3, "\\! id';".to_string())]
        );
    }

    #[test]
    fn a_semicolon_inside_begin_atomic_does_not_end_the_statement() {
        let script = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; COPY t FROM stdin; END;\n\\! id\n";
        assert_eq!(lines(script), [(2, "\\! id".to_string())]);
    }

    #[test]
    fn other_commands_are_refused_with_their_line() {
        for (script, line) in [
            ("SELECT 1;\n\\! id\n", 2),
            ("SELECT 1; \\setenv X y\n", 1),
            ("\\copy t from program 'id'\n", 1),
            ("\\restrict abc extra\n", 1),
            (" \\restrict abc\n", 1),
            ("\\restrict a-b\n", 1),
            ("\\restrict k1\n\\unrestrict k2\n", 2),
            ("\\restrict k1\n\\restrict k1\n", 2),
            ("\\unrestrict k1\n", 1),
        ] {
            match check_plain_dump(Path::new("d.sql"), script) {
                Err(MetaCommandError::Refused { line: l, .. }) => assert_eq!(l, line, "{script}"),
                other => panic!("{script}: {other:?}"),
            }
        }
        assert!(matches!(
            check_plain_dump(Path::new("d.sql"), "\\connect app\n"),
            Err(MetaCommandError::Connect { line: 1, .. })
        ));
    }

    fn doubt(script: &str) -> Option<(usize, Doubt)> {
        match check_plain_dump(Path::new("d.sql"), script) {
            Err(MetaCommandError::CannotJudge { line, doubt, .. }) => Some((line, doubt)),
            _ => None,
        }
    }

    #[test]
    fn what_psql_could_read_differently_is_refused_with_its_line() {
        for (script, line, expected) in [
            (
                "SELECT 1;\nSET standard_conforming_strings = off;\nSELECT 'a\\' , ' \\! id #';\n",
                2,
                Doubt::ConformingStrings,
            ),
            (
                "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);\n",
                1,
                Doubt::ConformingStrings,
            ),
            (
                "SET SESSION standard_conforming_strings TO off;\n",
                1,
                Doubt::ConformingStrings,
            ),
            // However it was turned off: where the string ends depends on it.
            ("SELECT 'a\\' , ' \\! id #';\n", 1, Doubt::BackslashQuote),
            ("SELECT 'a\\''';\n", 1, Doubt::BackslashQuote),
            (
                "SELECT 1;\nSELECT '\0';\nSELECT ' \\! id #';\n",
                2,
                Doubt::Nul,
            ),
            (
                "COPY t (a) FROM stdin;\n\\.\0\n\\! id\n\\.\n",
                2,
                Doubt::Nul,
            ),
            (
                "SET client_encoding = 'SJIS';\nSELECT '\u{101}' , ' \\! id #';\n",
                1,
                Doubt::ClientEncoding,
            ),
            ("SET NAMES 'BIG5';\n", 1, Doubt::ClientEncoding),
            (
                "select set_config('client_encoding', 'GBK', false);\n",
                1,
                Doubt::ClientEncoding,
            ),
            (
                "SET client_encoding TO DEFAULT;\n",
                1,
                Doubt::ClientEncoding,
            ),
            ("SELECT 1;\nRESET ALL;\n", 2, Doubt::ResetAll),
            // psql 15: `1a` and then a dollar quote; psql 16: one junk token.
            ("SELECT 1a$b$ \\! id $b$;\n", 1, Doubt::NumberDollar),
        ] {
            assert_eq!(doubt(script), Some((line, expected)), "{script:?}");
        }
    }

    #[test]
    fn pg_dumps_own_settings_and_backslashes_that_mean_the_same_either_way_pass() {
        let script = "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\
            SET client_encoding TO 'LATIN1';\nSET NAMES 'sql_ascii';\n\
            COMMENT ON TABLE t IS 'C:\\\\dir\\\\ and \\i';\nSELECT E'\\'', 1$a$ $a$, $1;\n\
            -- SET standard_conforming_strings = off;\n/* client_encoding SJIS */\n";
        assert_eq!(
            check_plain_dump(Path::new("d.sql"), script).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn psql_reads_a_dollar_after_digits_as_a_new_token() {
        // `1` and then the dollar-quoted ` `: the command after it runs.
        assert_eq!(
            lines("SELECT 1$a$ $a$ \\! id\n"),
            [(1, "\\! id".to_string())]
        );
        assert_eq!(
            lines("SELECT $1$a$ $a$ \\! id\n"),
            [(1, "\\! id".to_string())]
        );
    }
}
