//! Who is logged on: systemd-logind's session files, or utmp where logind is absent.

use std::collections::BTreeMap;
use std::path::Path;

use super::read_bounded;
use crate::session::SessionError;

/// The size of one utmp record on Linux (glibc, all 64-bit and 32-bit ABIs with 64-bit time).
const UTMP_RECORD: usize = 384;
/// `ut_type` of a logged-in user's record.
const USER_PROCESS: i16 = 7;
/// The largest `ut_type` Linux defines (`ACCOUNTING`).
const MAX_UT_TYPE: i16 = 9;
/// The most of utmp read: 43,690 records.
const UTMP_MAX: u64 = 16 << 20;
/// The most of one logind session file read: logind writes a few hundred bytes.
const SESSION_FILE_MAX: u64 = 64 << 10;
/// The most session files looked at.
const SESSIONS_MAX: usize = 65_536;

/// The logind session classes of a person logged on (systemd's `session_class_table`):
/// `user`, and its variants for early boot, for a home directory not yet unlocked
/// (`user-incomplete`) and for sessions without a per-user service manager (`-light`).
const INTERACTIVE_CLASSES: [&str; 5] = [
    "user",
    "user-early",
    "user-incomplete",
    "user-light",
    "user-early-light",
];
/// The classes that are no person logged on: a display manager's login screen, a lock
/// screen, cron and other background logins, the per-user service manager, and none.
const OTHER_CLASSES: [&str; 7] = [
    "greeter",
    "lock-screen",
    "background",
    "background-light",
    "manager",
    "manager-early",
    "none",
];

/// The users of a scan, and whether any session could not be judged.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Scan {
    /// The users of the sessions that count, one per session.
    pub users: Vec<String>,
    /// Why some session (or the list) could not be judged, if one could not.
    pub undecided: Option<String>,
}

/// The user names of the `USER_PROCESS` records in the utmp file at `path`.
pub(super) fn utmp_users(path: &Path) -> Result<Vec<String>, SessionError> {
    let error = |detail: String| SessionError::Users {
        source_name: path.display().to_string(),
        detail,
    };
    let bytes = read_bounded(path, UTMP_MAX + 1).map_err(|e| error(e.to_string()))?;
    if bytes.len() as u64 > UTMP_MAX {
        return Err(error(format!("larger than {UTMP_MAX} bytes: not utmp")));
    }
    parse_utmp(&bytes).map_err(error)
}

/// The user names of the `USER_PROCESS` records in a utmp file.
pub(super) fn parse_utmp(bytes: &[u8]) -> Result<Vec<String>, String> {
    if !bytes.len().is_multiple_of(UTMP_RECORD) {
        return Err(format!(
            "{} bytes is not a whole number of {UTMP_RECORD}-byte records: the file is truncated or not utmp",
            bytes.len()
        ));
    }
    let mut users = Vec::new();
    for (i, record) in bytes.chunks_exact(UTMP_RECORD).enumerate() {
        let ut_type = i16::from_le_bytes([record[0], record[1]]);
        if !(0..=MAX_UT_TYPE).contains(&ut_type) {
            return Err(format!(
                "record {i} has type {ut_type}: the file is not utmp"
            ));
        }
        if ut_type != USER_PROCESS {
            continue;
        }
        let name = &record[44..76];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if !name.is_empty() {
            users.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(users)
}

/// The sessions of logind's directory `dir` (one file per session, named by its id), in the
/// order of their ids. Hidden files (logind's temporary files) and anything not a regular
/// file (the `<id>.ref` FIFOs of logind before v258) are not sessions.
pub(super) fn logind_scan(dir: &Path) -> Result<Scan, SessionError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SessionError::Users {
        source_name: dir.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut files = Vec::new();
    let mut scan = Scan::default();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                scan.undecided = Some(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_file() => files.push(entry.path()),
            Ok(_) => {}
            Err(e) => scan.undecided = Some(format!("{}: {e}", entry.path().display())),
        }
        if files.len() > SESSIONS_MAX {
            scan.undecided = Some(format!(
                "{}: more than {SESSIONS_MAX} session files",
                dir.display()
            ));
            files.truncate(SESSIONS_MAX);
            break;
        }
    }
    files.sort();
    for path in files {
        match read_session(&path) {
            Ok(Verdict::Counts(user)) => scan.users.push(user),
            Ok(Verdict::DoesNotCount) => {}
            // A session that ended between the listing and the reading is no session.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => scan.undecided = Some(format!("{}: {e}", path.display())),
        }
    }
    Ok(scan)
}

/// Whether one session counts as an interactive user logged on.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It does: this user's.
    Counts(String),
    /// It does not (a login screen, a background session, a session closing).
    DoesNotCount,
}

fn read_session(path: &Path) -> std::io::Result<Verdict> {
    let invalid = |detail: String| std::io::Error::new(std::io::ErrorKind::InvalidData, detail);
    let bytes = read_bounded(path, SESSION_FILE_MAX + 1)?;
    if bytes.len() as u64 > SESSION_FILE_MAX {
        return Err(invalid(format!(
            "larger than {SESSION_FILE_MAX} bytes: not a logind session file"
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| invalid(e.to_string()))?;
    let fields = parse_env_file(text).map_err(invalid)?;
    judge(&fields).map_err(invalid)
}

/// A session counts when its class is a user's and its state `opening`, `online` or `active`
/// (remote or local, in the foreground or not: utmp, the fallback, counts every login too); a
/// `closing` session (logged out, processes lingering) does not. An unknown class or state is
/// an error: the session cannot be judged.
fn judge(fields: &BTreeMap<String, String>) -> Result<Verdict, String> {
    let field = |key: &str| {
        fields
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("no {key}= line: not a logind session file"))
    };
    let class = field("CLASS")?;
    if OTHER_CLASSES.contains(&class.as_str()) {
        return Ok(Verdict::DoesNotCount);
    }
    if !INTERACTIVE_CLASSES.contains(&class.as_str()) {
        return Err(format!("unknown session class {class:?}"));
    }
    match field("STATE")?.as_str() {
        "opening" | "online" | "active" => Ok(Verdict::Counts(field("USER")?.clone())),
        "closing" => Ok(Verdict::DoesNotCount),
        state => Err(format!("unknown session state {state:?}")),
    }
}

/// Parses the `KEY=value` lines logind writes (systemd's env-file format, as its `sd-login`
/// library reads them): `#` and `;` start comments, a value may be `"double-quoted"` (with
/// backslash escapes, over several lines) or `'single-quoted'`, a backslash escapes the next
/// character of an unquoted value. The last assignment of a key wins.
fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut fields = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            break;
        };
        if first == '#' || first == ';' {
            while chars.next_if(|&c| c != '\n').is_some() {}
            continue;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| c != '=' && c != '\n') {
            key.push(c);
        }
        let key = key.trim_end();
        if chars.next() != Some('=') {
            return Err(format!("the line {key:?} has no '='"));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{key:?} is not a variable name"));
        }
        while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        let mut value = String::new();
        match chars.peek() {
            Some(&quote @ ('"' | '\'')) => {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(format!("the value of {key} has no closing {quote}")),
                        Some(c) if c == quote => break,
                        Some('\\') if quote == '"' => match chars.next() {
                            None => return Err(format!("the value of {key} ends in '\\'")),
                            Some('\n') => {}
                            Some(c) => value.push(c),
                        },
                        Some(c) => value.push(c),
                    }
                }
                while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
                if chars.next_if(|&c| c != '\n').is_some() {
                    return Err(format!("text after the quoted value of {key}"));
                }
            }
            _ => {
                while let Some(c) = chars.next_if(|&c| c != '\n') {
                    if c == '\\' {
                        match chars.next() {
                            None => return Err(format!("the value of {key} ends in '\\'")),
                            Some('\n') => {}
                            Some(c) => value.push(c),
                        }
                    } else {
                        value.push(c);
                    }
                }
                value.truncate(value.trim_end().len());
            }
        }
        fields.insert(key.to_string(), value);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ut_type: i16, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_RECORD];
        r[..2].copy_from_slice(&ut_type.to_le_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r
    }

    #[test]
    fn utmp_records_are_parsed_and_bad_files_refused() {
        let mut file = record(2, "reboot"); // BOOT_TIME
        file.extend(record(USER_PROCESS, "alice"));
        file.extend(record(8, "bob")); // DEAD_PROCESS: logged off
        assert_eq!(parse_utmp(&file).unwrap(), ["alice"]);
        assert_eq!(parse_utmp(&[]).unwrap(), Vec::<String>::new());
        for cut in [1, UTMP_RECORD - 1, UTMP_RECORD + 7] {
            assert!(parse_utmp(&file[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_utmp(&record(300, "x")).is_err());
        assert!(parse_utmp(&record(-1, "x")).is_err());
        // A name filling all 32 bytes (no NUL) is read whole.
        assert_eq!(
            parse_utmp(&record(USER_PROCESS, &"n".repeat(32))).unwrap()[0].len(),
            32
        );
    }

    #[test]
    fn env_files_are_parsed_as_logind_writes_them() {
        let text = "# This is private data. Do not parse.\nUID=1000\nUSER=alice\n\
                    ACTIVE=1\nSTATE=active\nREMOTE_HOST=\"host with \\\"quotes\\\"\nand a line\"\n\
                    DESKTOP='a b'\n; comment\nCLASS=user\nSEAT=seat0  \nESC=a\\ b\n";
        let fields = parse_env_file(text).unwrap();
        assert_eq!(fields["USER"], "alice");
        assert_eq!(fields["REMOTE_HOST"], "host with \"quotes\"\nand a line");
        assert_eq!(fields["DESKTOP"], "a b");
        assert_eq!(fields["CLASS"], "user");
        assert_eq!(fields["SEAT"], "seat0");
        assert_eq!(fields["ESC"], "a b");
        assert_eq!(fields.len(), 9);
        for bad in [
            "USER",
            "=x",
            "US ER=x",
            "USER=\"open",
            "USER=\"a\" b",
            "USER=a\\",
        ] {
            assert!(parse_env_file(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_env_file("").unwrap().len(), 0);
    }

    #[test]
    fn sessions_are_judged_by_class_and_state() {
        let judge_text = |text: &str| judge(&parse_env_file(text).unwrap());
        let session = |class: &str, state: &str| {
            judge_text(&format!("USER=alice\nCLASS={class}\nSTATE={state}\n"))
        };
        for class in INTERACTIVE_CLASSES {
            for state in ["opening", "online", "active"] {
                assert_eq!(
                    session(class, state),
                    Ok(Verdict::Counts("alice".into())),
                    "{class} {state}"
                );
            }
            assert_eq!(session(class, "closing"), Ok(Verdict::DoesNotCount));
            assert!(session(class, "sleeping").is_err());
        }
        for class in OTHER_CLASSES {
            assert_eq!(
                session(class, "active"),
                Ok(Verdict::DoesNotCount),
                "{class}"
            );
        }
        assert!(session("robot", "active").is_err());
        assert!(
            judge_text("USER=alice\nSTATE=active\n").is_err(),
            "no class"
        );
        assert!(judge_text("USER=alice\nCLASS=user\n").is_err(), "no state");
        assert!(judge_text("CLASS=user\nSTATE=active\n").is_err(), "no user");
        assert!(judge_text("USER=\nCLASS=user\nSTATE=active\n").is_err());
    }
}
