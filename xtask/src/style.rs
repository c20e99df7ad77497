//! Colour for the words a person scans for on stderr (error, warning): only on a
//! terminal, and never with `NO_COLOR` set (<https://no-color.org>) or when piped.

use std::io::IsTerminal as _;

/// Whether stderr gets colour: a terminal, `NO_COLOR` unset or empty, `TERM` not `dumb`.
fn enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    !no_color && !dumb && std::io::stderr().is_terminal()
}

fn paint(code: &str, text: &str) -> String {
    match enabled() {
        true => format!("\x1b[{code}m{text}\x1b[0m"),
        false => text.to_string(),
    }
}

/// Bold red, for `error`.
pub(crate) fn error(text: &str) -> String {
    paint("1;31", text)
}

/// Bold yellow, for `warning`.
pub(crate) fn warning(text: &str) -> String {
    paint("1;33", text)
}
