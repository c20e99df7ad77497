//! Splitting a migration's SQL into statements, so a failure names the statement and
//! its line, and non-transactional migrations run one statement at a time.

use squawk_lexer::TokenKind;

/// One statement of a file: its text and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement as written, with the comments just above it.
    pub sql: String,
    /// 1-based line of the statement's first keyword: what a message names.
    pub line: usize,
    /// 1-based line where `sql` starts (a comment above the keyword, if any): where
    /// PostgreSQL's error positions, which count from the text sent, are measured from.
    pub text_line: usize,
}

/// Where in `sql` (the text that was sent) PostgreSQL's error points: lines below the
/// first, and the 1-based column. The server counts characters from 1.
pub fn error_location(sql: &str, error: &postgres::error::DbError) -> Option<(usize, usize)> {
    let postgres::error::ErrorPosition::Original(position) = error.position()? else {
        return None;
    };
    let before: String = sql
        .chars()
        .take((*position as usize).saturating_sub(1))
        .collect();
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((before.matches('\n').count(), column))
}

/// Splits on `;` where PostgreSQL's own lexer (squawk's port of `scan.l`) sees one:
/// outside strings of every kind (`'...'`, `E'...'`, `$tag$...$tag$`), quoted
/// identifiers, comments (nested), parentheses (rule actions) and `BEGIN ATOMIC ... END`
/// bodies, as psql does. Statements holding only whitespace and comments are dropped.
pub fn split_statements(sql: &str) -> Vec<Statement> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut parens = 0usize;
    // As psql: inside `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, BEGIN and CASE at
    // parenthesis depth 0 open a block that END closes (SQL-standard bodies).
    let mut begin_depth = 0usize;
    let mut first_words: Vec<String> = Vec::new();
    for (offset, token) in tokens(sql) {
        let text = &sql[offset..offset + token.len as usize];
        match token.kind {
            TokenKind::OpenParen => parens += 1,
            TokenKind::CloseParen => parens = parens.saturating_sub(1),
            TokenKind::Ident => {
                let word = text.to_ascii_uppercase();
                if first_words.len() < 4 {
                    first_words.push(word.clone());
                }
                match word.as_str() {
                    "BEGIN" | "CASE" if parens == 0 && defines_routine(&first_words) => {
                        begin_depth += 1
                    }
                    "END" => begin_depth = begin_depth.saturating_sub(1),
                    _ => {}
                }
            }
            TokenKind::Semi if parens == 0 && begin_depth == 0 => {
                push(&mut statements, sql, start, offset);
                start = offset + 1;
                first_words.clear();
            }
            _ => {}
        }
    }
    push(&mut statements, sql, start, sql.len());
    statements
}

/// Whether a statement's first words are `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
fn defines_routine(words: &[String]) -> bool {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        words.as_slice(),
        ["CREATE", "FUNCTION" | "PROCEDURE", ..]
            | ["CREATE", "OR", "REPLACE", "FUNCTION" | "PROCEDURE", ..]
    )
}

/// The tokens of `sql` with their byte offsets.
fn tokens(sql: &str) -> impl Iterator<Item = (usize, squawk_lexer::Token)> + '_ {
    let mut offset = 0;
    squawk_lexer::tokenize(sql).map(move |token| {
        let at = offset;
        offset += token.len as usize;
        (at, token)
    })
}

fn is_trivia(kind: TokenKind) -> bool {
    matches!(
        kind,
        TokenKind::Whitespace | TokenKind::LineComment | TokenKind::BlockComment { .. }
    )
}

fn push(statements: &mut Vec<Statement>, sql: &str, start: usize, end: usize) {
    let text = &sql[start..end];
    let Some(code) = tokens(text)
        .find(|(_, token)| !is_trivia(token.kind))
        .map(|(offset, _)| offset)
    else {
        return;
    };
    let leading = text.len() - text.trim_start().len();
    let line_at = |byte: usize| sql[..start + byte].matches('\n').count() + 1;
    statements.push(Statement {
        sql: text.trim().to_string(),
        line: line_at(code),
        text_line: line_at(leading),
    });
}

/// The first `n` words of a statement, upper-cased, comments skipped: what kind of
/// statement it is (`["CREATE", "INDEX", "CONCURRENTLY"]`).
pub fn leading_words(sql: &str, n: usize) -> Vec<String> {
    tokens(sql)
        .filter(|(_, token)| !is_trivia(token.kind))
        .take(n)
        .map(|(offset, token)| sql[offset..offset + token.len as usize].to_ascii_uppercase())
        .collect()
}

/// A savepoint name as written, `"a"` and `a` alike (the words are upper-cased already).
fn unquoted(word: &str) -> String {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .map_or_else(|| word.to_string(), |w| w.replace("\"\"", "\""))
}

/// Statements a migration file must not hold, each with its 1-based line and what to do
/// instead: psql meta-commands and `COPY ... stdin` (no psql runs the file), and
/// transaction control, which would commit or abandon part of a migration behind the
/// runner's back (it wraps a transactional migration and its bookkeeping in one
/// transaction).
pub fn forbidden_statements(sql: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let line_at = |byte: usize| sql[..byte].matches('\n').count() + 1;
    for (offset, token) in tokens(sql) {
        let text = &sql[offset..offset + token.len as usize];
        if token.kind == TokenKind::Unknown && text.starts_with('\\') {
            let command: String = sql[offset..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            found.push((
                line_at(offset),
                format!(
                    "psql meta-command `{command}`: migrations are sent to the server as SQL, \
                     without psql; write it as SQL"
                ),
            ));
        }
    }
    let mut savepoints: Vec<String> = Vec::new();
    for statement in split_statements(sql) {
        let words = leading_words(&statement.sql, 4);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let transaction = "transaction control: the runner wraps a transactional migration and \
             its alembic_version update in one transaction, which this would end or abandon \
             halfway; remove it (statements that cannot run in a transaction, such as CREATE \
             INDEX CONCURRENTLY, go in their own migration with `transactional = false`)";
        let problem = match words.as_slice() {
            ["BEGIN", ..]
            | ["START", "TRANSACTION", ..]
            | ["COMMIT", ..]
            | ["END", ..]
            | ["ABORT", ..]
            | ["PREPARE", "TRANSACTION", ..] => Some(transaction.to_string()),
            ["ROLLBACK", "TO", ..] | ["RELEASE", ..] => {
                let name = unquoted(words.last().unwrap_or(&""));
                (!savepoints.contains(&name)).then(|| {
                    format!(
                        "`{}` names no SAVEPOINT made earlier in this file: it would reach \
                         outside the migration",
                        words.join(" ")
                    )
                })
            }
            ["ROLLBACK", ..] => Some(transaction.to_string()),
            ["SAVEPOINT", name, ..] => {
                savepoints.push(unquoted(name));
                None
            }
            ["SET", "TRANSACTION", ..]
            | ["SET", "LOCAL" | "SESSION", "TRANSACTION", ..]
            | ["SET", "SESSION", "CHARACTERISTICS", ..] => Some(
                "SET TRANSACTION must be the first statement of a transaction, and the runner \
                 starts it; set what you need with SET LOCAL"
                    .to_string(),
            ),
            ["COPY", ..]
                if leading_words(&statement.sql, 64)
                    .iter()
                    .any(|w| w == "STDIN" || w == "STDOUT") =>
            {
                Some(
                    "COPY ... STDIN/STDOUT needs psql's data stream; use INSERT ... VALUES, \
                     or COPY from a file the server can read"
                        .to_string(),
                )
            }
            _ => None,
        };
        if let Some(problem) = problem {
            found.push((statement.line, problem));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split_statements(sql).into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let sql = "CREATE TABLE a (x text DEFAULT ';');\n-- a comment; here\nSELECT 'it''s;' ;\n/* block; /* nested; */ */ SELECT \"we;ird\";";
        assert_eq!(
            texts(sql),
            [
                "CREATE TABLE a (x text DEFAULT ';')",
                "-- a comment; here\nSELECT 'it''s;'",
                "/* block; /* nested; */ */ SELECT \"we;ird\"",
            ]
        );
    }

    #[test]
    fn dollar_quoted_bodies_stay_whole() {
        let sql = "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\nSELECT $$a;b$$;";
        assert_eq!(texts(sql).len(), 2);
        assert!(texts(sql)[0].ends_with("LANGUAGE sql"));
    }

    #[test]
    fn lines_point_at_the_first_code() {
        let sql = "-- header\n\nCREATE TABLE a ();\n\n  DROP TABLE a;\n-- trailing comment\n";
        let statements = split_statements(sql);
        assert_eq!(statements.len(), 2);
        assert_eq!((statements[0].line, statements[0].text_line), (3, 1));
        assert_eq!((statements[1].line, statements[1].text_line), (5, 5));
    }

    #[test]
    fn comment_only_files_have_no_statements() {
        assert!(split_statements("-- nothing to do\n/* really */\n").is_empty());
        assert!(split_statements("").is_empty());
    }

    #[test]
    fn escape_strings_and_parameters() {
        assert_eq!(texts(r"SELECT E'a\';b'; SELECT $1;").len(), 2);
    }

    /// SQL that a hand-written scanner gets wrong, each with the statements PostgreSQL
    /// (and psql) sees in it.
    #[test]
    fn the_tricky_sql_corpus_splits_as_postgresql_does() {
        let corpus: &[(&str, usize)] = &[
            // `$` continues an identifier: no dollar quote starts inside one.
            ("CREATE TABLE price$usd$ (amount$ numeric);\nDROP TABLE price$usd$;", 2),
            ("SELECT 1 AS a$b; SELECT $q$;$q$; SELECT $1", 3),
            // Tagged and nested-looking dollar quotes.
            ("DO $outer$ BEGIN PERFORM $inner$;$inner$; END $outer$; SELECT 2", 2),
            ("SELECT $a$ $b$ ; $b$ $a$", 1),
            // Nested block comments and line comments holding `;` and quotes.
            ("/* a; /* b; */ c; */ SELECT 1; -- it's; done\nSELECT 2", 2),
            // E'' strings with backslash escapes, standard strings with doubled quotes.
            (r"SELECT E'it\'s; \\'; SELECT 'a''b;c'", 2),
            // Quoted identifiers holding `;`, `$` and doubled quotes.
            (r#"CREATE TABLE "we;ird$x$" ("a""b;" int); SELECT 1"#, 2),
            // Rule actions in parentheses, and SQL-standard function bodies.
            ("CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 1", 2),
            ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3", 2),
            // A `;` in U&'' strings and bit strings.
            ("SELECT U&'d\\0061;t', B'1010'; SELECT X'1F'", 2),
        ];
        for (sql, expected) in corpus {
            assert_eq!(
                split_statements(sql).len(),
                *expected,
                "{sql}\n{:#?}",
                texts(sql)
            );
        }
    }

    #[test]
    fn transaction_control_meta_commands_and_copy_stdin_are_named_with_their_line() {
        let sql = "CREATE TABLE a ();\nCOMMIT;\nCREATE TABLE b ();\n\\! id\nBEGIN;\nSAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nRELEASE SAVEPOINT other;\nCOPY a FROM stdin;\nSET TRANSACTION ISOLATION LEVEL SERIALIZABLE;\nEND;\n";
        let found: Vec<usize> = forbidden_statements(sql).iter().map(|(l, _)| *l).collect();
        // Line 5's BEGIN runs on from the meta-command, as psql would not: one finding is enough.
        assert_eq!(
            found,
            [2, 4, 8, 9, 10, 11],
            "{:#?}",
            forbidden_statements(sql)
        );
        assert_eq!(forbidden_statements("SELECT 1;\n  BEGIN ;").len(), 1);
        // Words that only look like a routine body cannot hide what follows.
        let dodge = "CREATE TABLE ev (begin int, atomic int);\nINSERT INTO ev (begin, atomic) VALUES (1, 2);\nCOMMIT;\n";
        assert_eq!(forbidden_statements(dodge).first().map(|f| f.0), Some(3));
        let dodge = "SELECT t.begin, atomic FROM (SELECT 1 AS begin, 2 AS atomic) t;\nBEGIN;\n";
        assert_eq!(forbidden_statements(dodge).first().map(|f| f.0), Some(2));
        assert_eq!(
            forbidden_statements("SET LOCAL TRANSACTION READ ONLY;").len(),
            1
        );
        assert_eq!(
            forbidden_statements("SET SESSION TRANSACTION READ ONLY;").len(),
            1
        );
        assert_eq!(
            forbidden_statements("SAVEPOINT a; ROLLBACK TO SAVEPOINT \"a\";"),
            []
        );
        let messages = forbidden_statements(sql);
        assert!(messages[0].1.contains("transaction control"));
        assert!(messages.iter().any(|(_, m)| m.contains("`\\!`")));
        // What migrations legitimately hold.
        let fine = "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql;\n\
                    DO $$ BEGIN COMMIT; END $$;\nCREATE TABLE begin_log (\"end\" int);\n\
                    SAVEPOINT s; ROLLBACK TO s; RELEASE s;\nSELECT E'\\\\x';";
        assert_eq!(forbidden_statements(fine), []);
    }
}
