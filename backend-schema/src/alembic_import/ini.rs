//! The `alembic.ini` beside an Alembic project: its `version_locations`, which can put
//! revisions in directories the import would not read, are refused by name unless they
//! name only the versions directory being imported.

use std::path::{Path, PathBuf};

/// An `alembic.ini` whose `version_locations` reach beyond the imported directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraLocations {
    pub ini: PathBuf,
    pub value: String,
}

/// Checks the `alembic.ini` files Alembic's layouts put beside `versions`: in the
/// project directory (`script_location = .`) and in its parent (`script_location =
/// alembic`).
pub fn extra_version_locations(versions: &Path) -> Option<ExtraLocations> {
    let project = versions.parent()?;
    [Some(project), project.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join("alembic.ini"))
        .filter_map(|ini| {
            let text = std::fs::read_to_string(&ini).ok()?;
            let value = setting(&text, "version_locations")?;
            let separator = setting(&text, "version_path_separator");
            let here = ini.parent()?;
            let only_ours = split(&value, separator.as_deref()).iter().all(|location| {
                same_dir(
                    &here.join(location.replace("%(here)s", &here.display().to_string())),
                    versions,
                )
            });
            (!only_ours).then_some(ExtraLocations { ini, value })
        })
        .next()
}

/// `key`'s value as Alembic reads it with configparser: from the `[alembic]` section,
/// else from `[DEFAULT]` (whose options every section has), the name in any case.
fn setting(text: &str, key: &str) -> Option<String> {
    setting_in(text, "alembic", key).or_else(|| setting_in(text, "DEFAULT", key))
}

/// `key`'s value in `section` (`=` or `:`, continuation lines indented, `#` and `;`
/// comment lines, inline `  #` comments).
fn setting_in(text: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut in_section = false;
    let mut value: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            if value.is_some() {
                break;
            }
            in_section = trimmed == header;
            continue;
        }
        if !in_section || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(found) = value.as_mut() {
            if line.starts_with([' ', '\t']) && !trimmed.is_empty() {
                found.push('\n');
                found.push_str(strip_comment(trimmed));
                continue;
            }
            break;
        }
        let Some(position) = trimmed.find(['=', ':']) else {
            continue;
        };
        // configparser lowers every option name.
        if trimmed[..position].trim().eq_ignore_ascii_case(key) {
            value = Some(strip_comment(trimmed[position + 1..].trim()).to_string());
        }
    }
    value.filter(|value| !value.trim().is_empty())
}

fn strip_comment(value: &str) -> &str {
    value.split("  #").next().unwrap_or(value).trim()
}

/// The locations as Alembic splits them by `version_path_separator` (without one, the
/// legacy split on spaces and commas).
fn split(value: &str, separator: Option<&str>) -> Vec<String> {
    let parts: Vec<&str> = match separator {
        Some("os") | Some(":") => value.split(':').collect(),
        Some(";") => value.split(';').collect(),
        Some("space") => value.split(' ').collect(),
        Some("newline") => value.split('\n').collect(),
        _ => value.split([' ', ',']).collect(),
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_alembic_section_only_and_skips_comments() {
        let ini = "[alembic]\nscript_location = alembic\n# version_locations = a:b\n\
                   version_locations = %(here)s/a:%(here)s/b  # two\n[other]\nversion_locations = c\n";
        assert_eq!(
            setting(ini, "version_locations").as_deref(),
            Some("%(here)s/a:%(here)s/b")
        );
        assert_eq!(
            setting("[alembic]\n# version_locations = x\n", "version_locations"),
            None
        );
    }

    #[test]
    fn splits_as_alembic_does() {
        assert_eq!(split("a:b", Some("os")), ["a", "b"]);
        assert_eq!(split("a b,c", None), ["a", "b", "c"]);
        assert_eq!(split("a\nb", Some("newline")), ["a", "b"]);
    }
}
