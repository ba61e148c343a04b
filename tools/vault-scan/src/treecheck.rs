//! What `git fsck` would refuse in the `vault/actions` tree itself.
//!
//! libgit2 parses a tree leniently: two entries named `a.json` are both
//! listed by an iteration while a lookup by name (binary search, which
//! also assumes git's order) finds one of them, and `git show` may display
//! the other. So before anything is run the raw tree object is read and
//! checked as `git fsck` checks a tree (git's `fsck.c`, `fsck_tree`), and
//! an ambiguous tree is refused rather than resolved.
//!
//! Checked, with git fsck's message id:
//!
//! * `duplicateEntries`: two entries with the same name (any modes: a file
//!   and a folder named alike are duplicates too);
//! * `treeNotSorted`: entries out of git's order (names compared bytewise,
//!   a folder's name as if it ended in `/`);
//! * `badTree`: an entry with an empty name; a tree that cannot be parsed
//!   at all (truncated, a malformed mode, a missing name terminator), or an
//!   object that is not a tree;
//! * `hasDot`, `hasDotdot`: names `.` and `..`;
//! * `hasDotgit`: `.git` in any spelling git refuses (case, HFS+ ignored
//!   code points, NTFS trailing dots and spaces, `git~1`, a `\` or `:`
//!   suffix);
//! * `fullPathname`: a name containing `/`;
//! * `badFilemode`: a mode other than 40000, 100644, 100755, 120000 and
//!   160000 (100664 included, which only `git fsck --strict` reports);
//! * `zeroPaddedFilemode`: a mode written with a leading `0`;
//! * `nullSha1`: an entry pointing to the all-zero object id;
//! * `gitmodulesSymlink`, `gitattributesSymlink`, `gitignoreSymlink`,
//!   `mailmapSymlink`: those files (in any spelling) as symbolic links.
//!
//! A name cannot contain NUL: the NUL ends the name in the tree format, so
//! such an entry reads as a different, usually garbled, one.
//!
//! Not checked: the content of a `.gitmodules` or `.gitattributes` blob,
//! and the objects the entries point to (a folder entry pointing to a
//! blob, a missing blob). Only SHA-1 repositories (20-byte ids) are read.

use git2::{ObjectType, Oid, Repository};
use std::collections::HashMap;
use std::fmt;
use vault_core::layout::{ACTIONS_DIR, ACTION_SUFFIX, RESULT_SUFFIX};
use vault_core::ActionId;

/// Longest name a reason shows (in characters).
const MAX_SHOWN_NAME: usize = 80;

const OID_LEN: usize = 20;

/// One thing `git fsck` would refuse in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeProblem {
    /// The entry's name, lossy UTF-8; `None` when the problem is the whole
    /// tree (it cannot be parsed, or is not a tree).
    pub name: Option<String>,
    /// The action the entry belongs to, when its name is `<id>.json` or
    /// `<id>.result.json` with a valid id.
    pub id: Option<ActionId>,
    /// git fsck's message id, e.g. `duplicateEntries`.
    pub check: &'static str,
    /// Why, on one line.
    pub reason: String,
}

impl TreeProblem {
    fn entry(name: &[u8], check: &'static str, reason: impl Into<String>) -> TreeProblem {
        TreeProblem {
            name: Some(String::from_utf8_lossy(name).into_owned()),
            id: action_id_of(name),
            check,
            reason: reason.into(),
        }
    }

    fn tree(reason: impl Into<String>) -> TreeProblem {
        TreeProblem {
            name: None,
            id: None,
            check: "badTree",
            reason: reason.into(),
        }
    }
}

/// `vault/actions/<name>: <reason> (git fsck: <check>)`, one line; the
/// name is escaped and cut short.
impl fmt::Display for TreeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{ACTIONS_DIR}/{}: ", shown(name))?,
            None => write!(f, "{ACTIONS_DIR}: ")?,
        }
        write!(f, "{} (git fsck: {})", self.reason, self.check)
    }
}

/// A name for a message: escaped (no newline, no control character) and at
/// most [`MAX_SHOWN_NAME`] characters.
fn shown(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(MAX_SHOWN_NAME)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().nth(MAX_SHOWN_NAME).is_some() {
        out.push_str("...");
    }
    out
}

/// The action id an entry name belongs to: `<id>.json` or
/// `<id>.result.json` with a valid id.
pub fn action_id_of(name: &[u8]) -> Option<ActionId> {
    let name = std::str::from_utf8(name).ok()?;
    let stem = name
        .strip_suffix(RESULT_SUFFIX)
        .or_else(|| name.strip_suffix(ACTION_SUFFIX))?;
    ActionId::parse(stem).ok()
}

/// One entry of a raw tree.
struct RawEntry<'a> {
    mode_text: &'a [u8],
    /// `None` when the octal digits do not fit in 32 bits.
    mode: Option<u32>,
    name: &'a [u8],
    oid: &'a [u8],
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

impl RawEntry<'_> {
    fn is_dir(&self) -> bool {
        self.mode.is_some_and(|m| m & S_IFMT == S_IFDIR)
    }

    fn is_symlink(&self) -> bool {
        self.mode.is_some_and(|m| m & S_IFMT == S_IFLNK)
    }
}

/// Parse a raw tree (`<octal mode> <name>\0<20-byte id>`, repeated) as git
/// does: the entries, and why the parse stopped early, if it did (the
/// entries are then those before that point).
fn parse_tree(data: &[u8]) -> (Vec<RawEntry<'_>>, Option<String>) {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let at = data.len() - rest.len();
        let Some(space) = rest.iter().position(|&c| c == b' ') else {
            return (
                entries,
                Some(format!("entry at byte {at} has no space after its mode")),
            );
        };
        let mode_text = &rest[..space];
        if mode_text.is_empty() || !mode_text.iter().all(|c| (b'0'..=b'7').contains(c)) {
            return (
                entries,
                Some(format!("entry at byte {at} has a malformed mode")),
            );
        }
        let mode = mode_text.iter().try_fold(0u32, |m, &c| {
            m.checked_mul(8)?.checked_add(u32::from(c - b'0'))
        });
        let after_mode = &rest[space + 1..];
        let Some(nul) = after_mode.iter().position(|&c| c == 0) else {
            return (
                entries,
                Some(format!(
                    "entry at byte {at} is truncated (its name has no end)"
                )),
            );
        };
        let name = &after_mode[..nul];
        let after_name = &after_mode[nul + 1..];
        if after_name.len() < OID_LEN {
            return (
                entries,
                Some(format!(
                    "entry at byte {at} is truncated (its object id is {} bytes, not {OID_LEN})",
                    after_name.len()
                )),
            );
        }
        entries.push(RawEntry {
            mode_text,
            mode,
            name,
            oid: &after_name[..OID_LEN],
        });
        rest = &after_name[OID_LEN..];
    }
    (entries, None)
}

/// git's tree order (`base_name_compare`): bytewise, a folder's name
/// compared as if it ended in `/`.
fn git_order(a: &RawEntry<'_>, b: &RawEntry<'_>) -> std::cmp::Ordering {
    let len = a.name.len().min(b.name.len());
    a.name[..len].cmp(&b.name[..len]).then_with(|| {
        let end = |e: &RawEntry<'_>| {
            e.name
                .get(len)
                .copied()
                .unwrap_or(if e.is_dir() { b'/' } else { 0 })
        };
        end(a).cmp(&end(b))
    })
}

/// The problems `git fsck` would report for the entries of the tree `tree`
/// (not for the objects they point to), in entry order; empty for a good
/// tree. The raw object is read, not libgit2's parse of it, which may hide
/// a duplicate. Err only when the object cannot be read.
pub fn check_actions_tree(repo: &Repository, tree: Oid) -> Result<Vec<TreeProblem>, git2::Error> {
    let odb = repo.odb()?;
    let object = odb.read(tree)?;
    if object.kind() != ObjectType::Tree {
        return Ok(vec![TreeProblem::tree(format!(
            "object {tree} is a {}, not a tree",
            object.kind().str()
        ))]);
    }
    Ok(check_raw_tree(object.data()))
}

/// [`check_actions_tree`] on the bytes of a tree object.
pub fn check_raw_tree(data: &[u8]) -> Vec<TreeProblem> {
    let (entries, garbled) = parse_tree(data);
    let mut problems = Vec::new();

    let mut count: HashMap<&[u8], usize> = HashMap::new();
    for e in &entries {
        *count.entry(e.name).or_default() += 1;
    }

    for (i, e) in entries.iter().enumerate() {
        let name = e.name;
        if let Some(n) = count.remove(name).filter(|&n| n > 1) {
            let shown_name = shown(&String::from_utf8_lossy(name));
            problems.push(TreeProblem::entry(
                name,
                "duplicateEntries",
                format!("{n} entries are named \"{shown_name}\": which one is read is ambiguous"),
            ));
        }
        if let Some(prev) = i.checked_sub(1).map(|p| &entries[p]) {
            if prev.name != name && git_order(prev, e) != std::cmp::Ordering::Less {
                problems.push(TreeProblem::entry(
                    name,
                    "treeNotSorted",
                    format!(
                        "the tree is not in git's order: this entry follows \"{}\"",
                        shown(&String::from_utf8_lossy(prev.name))
                    ),
                ));
            }
        }
        check_name(e, &mut problems);
        check_mode(e, &mut problems);
        if e.oid.iter().all(|&b| b == 0) {
            problems.push(TreeProblem::entry(
                name,
                "nullSha1",
                "the entry points to the all-zero object id",
            ));
        }
    }

    if let Some(reason) = garbled {
        problems.push(TreeProblem::tree(format!(
            "the tree cannot be parsed: {reason}"
        )));
    }
    problems
}

fn check_name(e: &RawEntry<'_>, problems: &mut Vec<TreeProblem>) {
    let name = e.name;
    let mut push = |check, reason: &str| problems.push(TreeProblem::entry(name, check, reason));
    if name.is_empty() {
        push("badTree", "an entry has an empty name");
    }
    if name == b"." {
        push("hasDot", "an entry is named \".\"");
    }
    if name == b".." {
        push("hasDotdot", "an entry is named \"..\"");
    }
    if name.contains(&b'/') {
        push("fullPathname", "the name contains '/'");
    }
    let mut dotgit = is_hfs_dot(name, "git") || is_ntfs_dotgit(name);
    let mut gitmodules_link =
        e.is_symlink() && (is_hfs_dot(name, "gitmodules") || is_ntfs_dot(name, GITMODULES));
    // git also reads each part after a backslash as a Windows path would.
    for (i, _) in name.iter().enumerate().filter(|(_, &c)| c == b'\\') {
        let part = &name[i + 1..];
        dotgit |= is_ntfs_dotgit(part);
        gitmodules_link |= e.is_symlink() && is_ntfs_dot(part, GITMODULES);
    }
    if dotgit {
        push(
            "hasDotgit",
            "the name is \".git\" to git (in some spelling a file system treats as \".git\")",
        );
    }
    if gitmodules_link {
        push(
            "gitmodulesSymlink",
            "\".gitmodules\" (in some spelling) is a symbolic link",
        );
    }
    if e.is_symlink() {
        for (file, check) in [
            (GITATTRIBUTES, "gitattributesSymlink"),
            (GITIGNORE, "gitignoreSymlink"),
            (MAILMAP, "mailmapSymlink"),
        ] {
            if is_hfs_dot(name, file.0) || is_ntfs_dot(name, file) {
                push(
                    check,
                    &format!("\".{}\" (in some spelling) is a symbolic link", file.0),
                );
            }
        }
    }
}

fn check_mode(e: &RawEntry<'_>, problems: &mut Vec<TreeProblem>) {
    let mode_text = String::from_utf8_lossy(e.mode_text);
    let mode_text = shown(&mode_text);
    if e.mode_text.first() == Some(&b'0') {
        problems.push(TreeProblem::entry(
            e.name,
            "zeroPaddedFilemode",
            format!("the mode {mode_text} is zero-padded"),
        ));
    }
    match e.mode {
        Some(0o040000 | 0o100644 | 0o100755 | 0o120000 | 0o160000) => {}
        Some(0o100664) => problems.push(TreeProblem::entry(
            e.name,
            "badFilemode",
            "the mode 100664 is not a standard mode (git fsck --strict)",
        )),
        _ => problems.push(TreeProblem::entry(
            e.name,
            "badFilemode",
            format!("the mode {mode_text} is not a valid mode"),
        )),
    }
}

/// A special file's name without its dot, and the prefix of NTFS's
/// fall-back short name for it (git's `path.c`).
type Special = (&'static str, &'static str);
const GITMODULES: Special = ("gitmodules", "gi7eba");
const GITATTRIBUTES: Special = ("gitattributes", "gi7d29");
const GITIGNORE: Special = ("gitignore", "gi250a");
const MAILMAP: Special = ("mailmap", "maba30");

/// Byte `i` of a name, NUL past its end (git reads NUL-terminated names).
fn at(name: &[u8], i: usize) -> u8 {
    name.get(i).copied().unwrap_or(0)
}

/// git's `is_hfs_dot_generic`: `.<needle>` case-insensitively, ignoring
/// the code points HFS+ ignores, up to the end or a `/`. The name is read
/// up to its first malformed UTF-8 sequence, which git takes as its end.
fn is_hfs_dot(name: &[u8], needle: &str) -> bool {
    const IGNORED: [char; 16] = [
        '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}',
        '\u{202d}', '\u{202e}', '\u{206a}', '\u{206b}', '\u{206c}', '\u{206d}', '\u{206e}',
        '\u{206f}', '\u{feff}',
    ];
    let valid = name.utf8_chunks().next().map_or("", |c| c.valid());
    let mut chars = valid.chars().filter(|c| !IGNORED.contains(c));
    if chars.next() != Some('.') {
        return false;
    }
    for want in needle.chars() {
        match chars.next() {
            Some(c) if c.is_ascii() && c.to_ascii_lowercase() == want => {}
            _ => return false,
        }
    }
    matches!(chars.next(), None | Some('/'))
}

/// git's `is_ntfs_dotgit`: `.git` or `git~1`, case-insensitively, then only
/// dots and spaces up to the end, a `\`, a `/` or a `:`.
fn is_ntfs_dotgit(name: &[u8]) -> bool {
    let mut i = if at(name, 0) == b'.' {
        if !name
            .get(1..4)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"git"))
        {
            return false;
        }
        4
    } else if name
        .get(..3)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"git"))
    {
        if at(name, 3) != b'~' || at(name, 4) != b'1' {
            return false;
        }
        5
    } else {
        return false;
    };
    loop {
        let c = at(name, i);
        i += 1;
        if matches!(c, 0 | b'\\' | b'/' | b':') {
            return true;
        }
        if c != b'.' && c != b' ' {
            return false;
        }
    }
}

/// git's `is_ntfs_dot_generic`: `.<name>`, its regular short name (six
/// characters, `~1` to `~4`) or the fall-back short name (`<prefix>~N`),
/// then only dots and spaces up to the end or a `:`.
fn is_ntfs_dot(name: &[u8], (needle, short_prefix): Special) -> bool {
    fn only_spaces_and_periods(name: &[u8], mut i: usize) -> bool {
        loop {
            let c = at(name, i);
            i += 1;
            if c == 0 || c == b':' {
                return true;
            }
            if c != b' ' && c != b'.' {
                return false;
            }
        }
    }
    // strncasecmp against a needle without NUL: the first n bytes match.
    let starts_with = |from: usize, want: &[u8]| {
        want.iter()
            .enumerate()
            .all(|(k, w)| at(name, from + k).to_ascii_lowercase() == *w)
    };
    let needle = needle.as_bytes();
    let short_prefix = short_prefix.as_bytes();
    if at(name, 0) == b'.' && starts_with(1, needle) {
        return only_spaces_and_periods(name, needle.len() + 1);
    }
    if starts_with(0, &needle[..6]) && at(name, 6) == b'~' && (b'1'..=b'4').contains(&at(name, 7)) {
        return only_spaces_and_periods(name, 8);
    }
    let mut saw_tilde = false;
    let mut i = 0;
    while i < 8 {
        let c = at(name, i);
        if c == 0 {
            return false;
        } else if saw_tilde {
            if !c.is_ascii_digit() {
                return false;
            }
        } else if c == b'~' {
            i += 1;
            if !(b'1'..=b'9').contains(&at(name, i)) {
                return false;
            }
            saw_tilde = true;
        } else if i >= 6 || c & 0x80 != 0 || c.to_ascii_lowercase() != short_prefix[i] {
            return false;
        }
        i += 1;
    }
    only_spaces_and_periods(name, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    const BLOB: &[u8] = b"{}\n";

    /// A bare repo with one blob; trees are written raw into its odb.
    struct Repo {
        dir: tempfile::TempDir,
        repo: Repository,
        blob: Oid,
    }

    impl Repo {
        fn new() -> Repo {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_bare(dir.path()).unwrap();
            let blob = repo.blob(BLOB).unwrap();
            Repo { dir, repo, blob }
        }

        /// Write a tree of `(mode, name)` entries, all pointing to the blob
        /// (to the tree's own empty subtree for a folder mode), in the order
        /// given, without any check.
        fn tree(&self, entries: &[(&str, &[u8])]) -> Oid {
            let empty = self
                .repo
                .odb()
                .unwrap()
                .write(ObjectType::Tree, b"")
                .unwrap();
            let mut raw = Vec::new();
            for (mode, name) in entries {
                raw.extend_from_slice(mode.as_bytes());
                raw.push(b' ');
                raw.extend_from_slice(name);
                raw.push(0);
                let target = if mode.trim_start_matches('0').starts_with('4') {
                    empty
                } else {
                    self.blob
                };
                raw.extend_from_slice(target.as_bytes());
            }
            self.raw(&raw)
        }

        fn raw(&self, bytes: &[u8]) -> Oid {
            self.repo
                .odb()
                .unwrap()
                .write(ObjectType::Tree, bytes)
                .unwrap()
        }

        fn check(&self, tree: Oid) -> Vec<TreeProblem> {
            check_actions_tree(&self.repo, tree).unwrap()
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    fn checks(problems: &[TreeProblem]) -> Vec<&'static str> {
        problems.iter().map(|p| p.check).collect()
    }

    fn id(s: &str) -> Option<ActionId> {
        Some(ActionId::parse(s).unwrap())
    }

    /// `git fsck --strict` on the repo, or None when git cannot be run.
    /// Every object is checked, dangling ones included.
    fn git_fsck(repo: &Path) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["fsck", "--strict", "--no-dangling", "--no-progress"])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output();
        match out {
            Ok(o) => Some(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("git is not installed: fsck cross-check skipped");
                None
            }
            Err(e) => panic!("cannot run git: {e}"),
        }
    }

    #[test]
    fn good_tree_has_no_problems() {
        let r = Repo::new();
        let t = r.tree(&[
            ("100644", b".keep"),
            ("100644", b"a.json"),
            ("100644", b"a.result.json"),
            ("100755", b"b.json"),
            ("40000", b"b"),
            ("100644", b"b.x"),
            ("120000", b"c.json"),
            ("160000", b"d.json"),
        ]);
        // In git's order the folder "b" sorts as "b/", after "b.x"
        // ('.' < '/'): `t` is out of order there, `t2` is not.
        let t2 = r.tree(&[
            ("100644", b".keep"),
            ("100644", b"a.json"),
            ("100644", b"a.result.json"),
            ("100755", b"b.json"),
            ("100644", b"b.x"),
            ("40000", b"b"),
            ("120000", b"c.json"),
            ("160000", b"d.json"),
        ]);
        assert_eq!(checks(&r.check(t)), ["treeNotSorted"]);
        assert_eq!(r.check(t2), []);
        let empty = r.raw(b"");
        assert_eq!(r.check(empty), []);
        // libgit2 builds the same tree from the same entries.
        let mut b = r.repo.treebuilder(None).unwrap();
        for name in ["c.json", "a.json", "b.x", ".keep", "a.result.json"] {
            b.insert(name, r.blob, 0o100644).unwrap();
        }
        let empty_tree = r.repo.treebuilder(None).unwrap().write().unwrap();
        b.insert("b", empty_tree, 0o040000).unwrap();
        let built = b.write().unwrap();
        assert_eq!(r.check(built), []);
    }

    #[test]
    fn duplicate_names_are_reported_with_the_id() {
        let r = Repo::new();
        let t = r.tree(&[
            ("100644", b"a.json"),
            ("100644", b"a.json"),
            ("100644", b"b.result.json"),
            ("100644", b"b.result.json"),
            ("100644", b"b.result.json"),
        ]);
        // libgit2 lists both entries: the duplicate is not hidden from a
        // walk, but a lookup by name finds only one of them.
        assert_eq!(r.repo.find_tree(t).unwrap().len(), 5);
        let p = r.check(t);
        assert_eq!(checks(&p), ["duplicateEntries", "duplicateEntries"]);
        assert_eq!(p[0].id, id("a"));
        assert_eq!(p[0].name.as_deref(), Some("a.json"));
        assert!(p[0].reason.contains("2 entries"), "{}", p[0].reason);
        assert_eq!(p[1].id, id("b"));
        assert!(p[1].reason.contains("3 entries"), "{}", p[1].reason);
        let line = p[0].to_string();
        assert!(line.starts_with("vault/actions/a.json: "), "{line}");
        assert!(line.ends_with("(git fsck: duplicateEntries)"), "{line}");

        // A file and a folder of the same name, also apart (git: "foo",
        // "foo.bar", "foo/" is sorted but has a duplicate).
        let t = r.tree(&[
            ("100644", b"x.json"),
            ("100644", b"x.json.keep"),
            ("40000", b"x.json"),
        ]);
        let p = r.check(t);
        assert_eq!(checks(&p), ["duplicateEntries"]);
        assert_eq!(p[0].id, id("x"));
    }

    #[test]
    fn duplicate_names_are_refused_by_git_fsck_too() {
        let r = Repo::new();
        r.tree(&[("100644", b"a.json"), ("100644", b"a.json")]);
        let Some(out) = git_fsck(r.path()) else {
            return;
        };
        assert!(out.contains("duplicateEntries"), "{out}");
    }

    #[test]
    fn unsorted_tree_is_reported() {
        let r = Repo::new();
        let t = r.tree(&[("100644", b"b.json"), ("100644", b"a.json")]);
        let p = r.check(t);
        assert_eq!(checks(&p), ["treeNotSorted"]);
        assert_eq!(p[0].id, id("a"));
        assert!(p[0].reason.contains("\"b.json\""), "{}", p[0].reason);
        // A folder sorts as if its name ended in '/': "a/" > "a.b".
        let t = r.tree(&[("40000", b"a"), ("100644", b"a.b")]);
        assert_eq!(checks(&r.check(t)), ["treeNotSorted"]);
        let t = r.tree(&[("100644", b"a.b"), ("40000", b"a")]);
        assert_eq!(r.check(t), []);
    }

    #[test]
    fn bad_names_are_reported() {
        let r = Repo::new();
        let cases: &[(&[u8], &str)] = &[
            (b".git", "hasDotgit"),
            (b".GIT", "hasDotgit"),
            (b".Git. . ", "hasDotgit"),
            (b"git~1", "hasDotgit"),
            (b".git:stream", "hasDotgit"),
            (b"a\\.git", "hasDotgit"),
            (".g\u{200c}it".as_bytes(), "hasDotgit"),
            (b".git\xff", "hasDotgit"),
            (b".", "hasDot"),
            (b"..", "hasDotdot"),
            (b"a/b.json", "fullPathname"),
            (b"", "badTree"),
        ];
        for (name, want) in cases {
            let t = r.tree(&[("100644", name)]);
            let p = r.check(t);
            assert_eq!(checks(&p), [*want], "{:?}", String::from_utf8_lossy(name));
            assert!(!p[0].to_string().contains('\n'));
        }
        // Not .git.
        for name in [&b".gitx"[..], b".git.json", b"git~2", b"x.git", b".github"] {
            let t = r.tree(&[("100644", name)]);
            assert_eq!(r.check(t), [], "{:?}", String::from_utf8_lossy(name));
        }
        // A name that is not UTF-8 is named lossily, with no id.
        let t = r.tree(&[("100644", b"\xff.json")]);
        assert_eq!(r.check(t), []);
        let t = r.tree(&[("100644", b"\xff.json"), ("100644", b"\xff.json")]);
        let p = r.check(t);
        assert_eq!(p[0].name.as_deref(), Some("\u{fffd}.json"));
        assert_eq!(p[0].id, None);
    }

    #[test]
    fn special_files_as_symlinks_are_reported() {
        let r = Repo::new();
        let cases: &[(&[u8], &str)] = &[
            (b".gitmodules", "gitmodulesSymlink"),
            (b".GITMODULES . ", "gitmodulesSymlink"),
            (b"gitmod~1", "gitmodulesSymlink"),
            (b"gi7eba~9", "gitmodulesSymlink"),
            (b".gitattributes", "gitattributesSymlink"),
            (b".gitignore", "gitignoreSymlink"),
            (b".mailmap", "mailmapSymlink"),
        ];
        for (name, want) in cases {
            let t = r.tree(&[("120000", name)]);
            assert_eq!(
                checks(&r.check(t)),
                [*want],
                "{:?}",
                String::from_utf8_lossy(name)
            );
            // As regular files they are fine here.
            let t = r.tree(&[("100644", name)]);
            assert_eq!(r.check(t), []);
        }
    }

    #[test]
    fn bad_modes_are_reported() {
        let r = Repo::new();
        let cases: &[(&str, &[&str])] = &[
            ("100664", &["badFilemode"]),
            ("100600", &["badFilemode"]),
            ("123456", &["badFilemode"]),
            ("040000", &["zeroPaddedFilemode"]),
            ("0100644", &["zeroPaddedFilemode"]),
            ("0", &["zeroPaddedFilemode", "badFilemode"]),
            ("77777777777777", &["badFilemode"]),
        ];
        for (mode, want) in cases {
            let t = r.tree(&[(mode, b"m.json")]);
            let p = r.check(t);
            assert_eq!(checks(&p), *want, "{mode}");
            assert!(p.iter().all(|p| p.id == id("m")), "{mode}");
        }
    }

    #[test]
    fn null_object_id_is_reported() {
        let r = Repo::new();
        let mut raw = b"100644 n.json\0".to_vec();
        raw.extend_from_slice(&[0; 20]);
        let p = r.check(r.raw(&raw));
        assert_eq!(checks(&p), ["nullSha1"]);
        assert_eq!(p[0].id, id("n"));
    }

    #[test]
    fn garbled_tree_is_one_problem_without_an_id() {
        let r = Repo::new();
        let good = {
            let mut raw = b"100644 a.json\0".to_vec();
            raw.extend_from_slice(r.blob.as_bytes());
            raw
        };
        let cases: Vec<Vec<u8>> = vec![
            good[..good.len() - 1].to_vec(), // short id
            b"100644 a.json".to_vec(),       // no NUL
            b"100644".to_vec(),              // no name
            [&good[..], b"10x644 b.json\0", r.blob.as_bytes()].concat(), // bad mode
            [&good[..], b" b.json\0", r.blob.as_bytes()].concat(), // empty mode
        ];
        for raw in cases {
            let p = r.check(r.raw(&raw));
            let last = p.last().unwrap();
            assert_eq!(
                (last.check, &last.name, &last.id),
                ("badTree", &None, &None),
                "{raw:?}"
            );
            assert!(last.reason.starts_with("the tree cannot be parsed"));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(last.to_string().starts_with("vault/actions: "));
        }
        // libgit2 refuses to parse it too.
        assert!(r.repo.find_tree(r.raw(&good[..good.len() - 1])).is_err());
    }

    #[test]
    fn not_a_tree_is_one_problem() {
        let r = Repo::new();
        let p = r.check(r.blob);
        assert_eq!(checks(&p), ["badTree"]);
        assert!(p[0].reason.contains("is a blob"), "{}", p[0].reason);
        let missing = Oid::hash_object(ObjectType::Tree, b"nope").unwrap();
        assert!(check_actions_tree(&r.repo, missing).is_err());
    }

    #[test]
    fn long_names_are_shown_short() {
        let r = Repo::new();
        let long = format!("{}\n.json", "x".repeat(5000));
        let t = r.tree(&[("100644", long.as_bytes()), ("100644", long.as_bytes())]);
        let line = r.check(t)[0].to_string();
        assert!(line.len() < 400, "{}", line.len());
        assert!(!line.contains('\n'));
    }

    /// Each kind of bad tree above, in one repo, against `git fsck
    /// --strict`: every message id this module gives, git gives too.
    #[test]
    fn git_fsck_agrees() {
        let r = Repo::new();
        let trees: Vec<(Oid, &str)> = vec![
            (
                r.tree(&[("100644", b"a.json"), ("100644", b"a.json")]),
                "duplicateEntries",
            ),
            (
                r.tree(&[("100644", b"x"), ("100644", b"x.y"), ("40000", b"x")]),
                "duplicateEntries",
            ),
            (
                r.tree(&[("100644", b"b"), ("100644", b"a")]),
                "treeNotSorted",
            ),
            (r.tree(&[("100644", b".GiT")]), "hasDotgit"),
            (r.tree(&[("100644", b"git~1")]), "hasDotgit"),
            (r.tree(&[("100644", b".")]), "hasDot"),
            (r.tree(&[("100644", b"..")]), "hasDotdot"),
            (r.tree(&[("100644", b"a/b")]), "fullPathname"),
            (r.tree(&[("100664", b"a")]), "badFilemode"),
            (r.tree(&[("100600", b"a")]), "badFilemode"),
            (r.tree(&[("040000", b"d")]), "zeroPaddedFilemode"),
            (r.tree(&[("120000", b".gitmodules")]), "gitmodulesSymlink"),
            (r.tree(&[("120000", b".mailmap")]), "mailmapSymlink"),
            (r.tree(&[("120000", b"gi7eba~9")]), "gitmodulesSymlink"),
            (
                r.tree(&[("100644", ".g\u{200c}it".as_bytes())]),
                "hasDotgit",
            ),
            (r.tree(&[("100644", b".git\xff")]), "hasDotgit"),
            (r.tree(&[("100644", b"a\\.git")]), "hasDotgit"),
            (r.tree(&[("100644", b".git:x")]), "hasDotgit"),
            (r.raw(b"100644 a.json\0short"), "badTree"),
            (r.raw(&[b"100644 z\0", &[0u8; 20][..]].concat()), "nullSha1"),
            (r.tree(&[("100644", b"")]), "badTree"),
        ];
        for (t, want) in &trees {
            assert_eq!(checks(&r.check(*t)), [*want], "{t}");
        }
        let Some(out) = git_fsck(r.path()) else {
            return;
        };
        for (t, want) in &trees {
            // "error in tree <id>: <msgId>: <text>"; "broken links" (an
            // entry's object is missing or of the wrong type) has no id.
            let prefix = format!("in tree {t}: ");
            let git_says: std::collections::BTreeSet<&str> = out
                .lines()
                .filter_map(|l| l.split_once(&prefix))
                .filter_map(|(_, rest)| rest.split_once(": "))
                .map(|(id, _)| id)
                .collect();
            assert_eq!(
                git_says,
                [*want].into(),
                "git fsck --strict on tree {t}:\n{out}"
            );
        }
    }
}
