//! Which of the files to upload a target lacks, without hashing them all there each time.
//!
//! The target keeps a manifest of what was put there (`<cache>/var/uploaded.manifest`: one
//! `sum size mtime path` line per file). A file whose size and modification time (to the
//! nanosecond) still match its manifest line with the wanted sum is taken as it is; any other
//! file present is hashed; a missing one is wanted. After the upload the manifest is written
//! anew from the files' current stats. A machine started from a packaged image carries the
//! manifest, so its check is a `stat` per file. The stats are of what a path leads to (`stat
//! -L`): a back-end may have linked an artifact to a read-only copy of its host's, and when
//! that copy changes, so must the stat.

/// The manifest on the target.
pub const MANIFEST: &str = "/root/.raptiformica.d/var/uploaded.manifest";
/// The wanted list of the last check, kept for [`record_script`].
const WANTED: &str = "/root/.raptiformica.d/var/uploaded.wanted";

/// A script that reads `sum path` lines on stdin and prints the paths the target lacks or
/// holds another version of.
pub fn diff_script() -> String {
    format!(
        r#"set -e
m={MANIFEST}; w={WANTED}
mkdir -p "$(dirname "$m")"
cat >"$w"
cut -d' ' -f2- "$w" | xargs -r -d '\n' stat -L -c '%s %.9Y %n' 2>/dev/null >"$w.stat" || true
awk -v man="$m" -v st="$w.stat" '
  function rest(line, n,    i, p) {{ p = line; for (i = 0; i < n; i++) sub(/^[^ ]+ /, "", p); return p }}
  BEGIN {{
    while ((getline l < st) > 0) {{ split(l, f, " "); cur[rest(l, 2)] = f[1] " " f[2] }}
    while ((getline l < man) > 0) {{ split(l, f, " "); rec[rest(l, 3)] = f[1] " " f[2] " " f[3] }}
  }}
  {{
    p = rest($0, 1)
    if (!(p in cur)) {{ print "want - " p; next }}
    if (rec[p] == $1 " " cur[p]) next
    print "hash " $1 " " p
  }}' "$w" | while read -r what a b; do
  if [ "$what" = want ]; then printf '%s\n' "$b"; continue; fi
  [ "$(sha256sum "$b" | cut -d' ' -f1)" = "$a" ] || printf '%s\n' "$b"
done
rm -f "$w.stat"
"#
    )
}

/// A script that writes the manifest from the last check's wanted list and the files' stats
/// now (after the upload, every wanted file holds its wanted sum).
pub fn record_script() -> String {
    format!(
        r#"m={MANIFEST}; w={WANTED}
if [ -f "$w" ]; then
  while read -r sum path; do
    if s=$(stat -L -c '%s %.9Y' "$path" 2>/dev/null); then printf '%s %s %s\n' "$sum" "$s" "$path"; fi
  done <"$w" >"$m.tmp" && mv -f "$m.tmp" "$m"
  rm -f "$w"
fi
"#
    )
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests run ssh and sh directly
mod tests {
    use super::*;

    /// Runs a script with the manifest paths moved into `dir`.
    fn run(dir: &std::path::Path, script: &str, stdin: &str) -> String {
        let script = script
            .replace(MANIFEST, &dir.join("manifest").display().to_string())
            .replace(WANTED, &dir.join("wanted").display().to_string());
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    fn sum(text: &str) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn unchanged_files_are_not_wanted_and_changed_or_missing_ones_are() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a file"), d.path().join("b"), d.path().join("c"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        let wanted = format!(
            "{} {}\n{} {}\n{} {}\n",
            sum("one"),
            a.display(),
            sum("TWO"),
            b.display(),
            sum("three"),
            c.display()
        );
        // No manifest yet: every present file is hashed; b differs, c is missing.
        let out = run(d.path(), &diff_script(), &wanted);
        assert_eq!(out, format!("{}\n{}\n", b.display(), c.display()));
        // After the "upload" the manifest records them; a second check wants nothing.
        std::fs::write(&b, "TWO").unwrap();
        std::fs::write(&c, "three").unwrap();
        run(d.path(), &record_script(), "");
        assert_eq!(
            std::fs::read_to_string(d.path().join("manifest"))
                .unwrap()
                .lines()
                .count(),
            3
        );
        assert_eq!(run(d.path(), &diff_script(), &wanted), "");
        // A file changed behind our back (same size) is caught by its time, then its sum.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&b, "two").unwrap();
        assert_eq!(run(d.path(), &diff_script(), &wanted), format!("{}\n", b.display()));
    }
}
