//! The psql meta-commands a plain dump holds, found the way psql's own lexer finds them:
//! a backslash outside strings, quoted identifiers, dollar quotes, comments and COPY data.
//! psql runs such a line on the restoring machine (`\!` is a shell), so a plain dump may
//! hold only what pg_dump writes itself.

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
}

/// The lines of pg_dump's own meta-commands in `script`, or the first other one, named.
pub fn check_plain_dump(path: &Path, script: &str) -> Result<Vec<usize>, MetaCommandError> {
    let mut own = Vec::new();
    // pg_dump writes one key, `\restrict` and `\unrestrict` taking turns.
    let mut key: Option<String> = None;
    let mut restricted = false;
    for command in meta_commands(script) {
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
}

impl Statement {
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

/// Every meta-command psql would run in `script`, in order.
pub fn meta_commands(script: &str) -> Vec<MetaCommand> {
    let mut found = Vec::new();
    let mut state = State::Code;
    let mut statement = Statement::default();
    let mut copies_pending = 0usize;
    for (index, line) in script.split('\n').enumerate() {
        let number = index + 1;
        if copies_pending > 0 {
            if line.strip_suffix('\r').unwrap_or(line) == "\\." {
                copies_pending -= 1;
            }
            continue;
        }
        let bytes = line.as_bytes();
        let mut i = 0;
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
                        }
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                State::Quoted { escapes } => {
                    let doubled = b == b'\'' && bytes.get(i + 1) == Some(&b'\'');
                    if (*escapes && b == b'\\') || doubled {
                        i += 2;
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
                    if bytes[i..].starts_with(b"--") {
                        break;
                    }
                    if bytes[i..].starts_with(b"/*") {
                        state = State::Comment(1);
                        i += 2;
                        continue;
                    }
                    match b {
                        b'\\' => {
                            found.push(MetaCommand {
                                line: number,
                                text: line[i..].trim_end().to_string(),
                                at_line_start: i == 0,
                            });
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
                                i += 1;
                                while i < bytes.len() && bytes[i].is_ascii_digit() {
                                    i += 1;
                                }
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
                            // A number and the identifier characters after it are one
                            // (junk) token to psql: `1e'x'` is a plain string after it.
                            while i < bytes.len()
                                && (bytes[i].is_ascii_digit()
                                    || bytes[i] == b'_'
                                    || bytes[i] == b'.')
                            {
                                i += 1;
                            }
                            while i < bytes.len() && ident_cont(bytes[i]) {
                                i += 1;
                            }
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
                            if statement.copies_from_stdin() {
                                copies_pending += 1;
                            }
                            statement = Statement::default();
                            i += 1;
                        }
                        _ => {
                            statement.token(None);
                            i += 1;
                        }
                    }
                }
            }
        }
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
}
