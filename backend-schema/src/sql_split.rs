//! Splitting a migration's SQL into statements, so a failure names the statement and
//! its line, and non-transactional migrations run one statement at a time.

/// One statement of a file: its text and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    /// 1-based line of the statement's first character in the file.
    pub line: usize,
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

/// Splits on `;` outside quotes, dollar quotes and comments. Statements holding only
/// whitespace and comments are dropped.
pub fn split_statements(sql: &str) -> Vec<Statement> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'\'' => {
                let escapes = i > 0 && matches!(bytes[i - 1], b'E' | b'e');
                i = skip_quoted(bytes, i, b'\'', escapes);
            }
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'$' => i = skip_dollar_quoted(sql, i),
            b';' => {
                push(&mut statements, sql, start, i);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    push(&mut statements, sql, start, bytes.len());
    statements
}

fn push(statements: &mut Vec<Statement>, sql: &str, start: usize, end: usize) {
    let text = &sql[start..end];
    if !has_code(text) {
        return;
    }
    let leading = text.len() - text.trim_start().len();
    let line = sql[..start + leading].matches('\n').count() + 1;
    statements.push(Statement {
        sql: text.trim().to_string(),
        line,
    });
}

/// Whether `text` holds anything but whitespace and comments.
fn has_code(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            c if c.is_ascii_whitespace() => i += 1,
            _ => return true,
        }
    }
    false
}

fn skip_block_comment(bytes: &[u8], mut i: usize) -> usize {
    // PostgreSQL block comments nest.
    let mut depth = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8, backslash_escapes: bool) -> usize {
    i += 1;
    while i < bytes.len() {
        if backslash_escapes && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            // A doubled quote is an escaped quote.
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

fn skip_dollar_quoted(sql: &str, i: usize) -> usize {
    let rest = &sql[i + 1..];
    let tag_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    // `$1` is a parameter, not a quote; a tag cannot start with a digit.
    if rest.as_bytes().get(tag_len) != Some(&b'$')
        || rest.chars().next().is_some_and(|c| c.is_ascii_digit())
    {
        return i + 1;
    }
    let delimiter = &sql[i..i + tag_len + 2];
    let body = i + delimiter.len();
    match sql[body..].find(delimiter) {
        Some(end) => body + end + delimiter.len(),
        None => sql.len(),
    }
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
        assert_eq!(statements[0].line, 1);
        assert_eq!(statements[1].line, 5);
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
}
