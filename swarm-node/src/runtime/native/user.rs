//! The user an image's `User` names (`name`, `uid`, `name:group`,
//! `uid:gid`), looked up in the image's own /etc/passwd and /etc/group, as
//! Docker does.

use std::{fs, path::Path};

/// Who the task's program runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::runtime) struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// `spec` resolved inside the image rooted at `root`.
    pub fn resolve(spec: &str, root: &Path) -> Result<Self, String> {
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
        let (uid, primary_gid) = match user.parse::<u32>() {
            Ok(uid) => (
                uid,
                entries(&passwd)
                    .find(|fields| fields.get(2) == Some(&user))
                    .and_then(|fields| fields.get(3)?.parse().ok())
                    .unwrap_or(uid),
            ),
            Err(_) => entries(&passwd)
                .find(|fields| fields.first() == Some(&user))
                .and_then(|fields| {
                    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
                })
                .ok_or_else(|| format!("the image's user {user:?} is not in its /etc/passwd"))?,
        };
        let gid = match group {
            None => primary_gid,
            Some(group) => resolve_group(group, root)?,
        };
        Ok(Self { uid, gid })
    }
}

/// A group by number, or by name in the image's /etc/group (`--group`).
pub(in crate::runtime) fn resolve_group(group: &str, root: &Path) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups = fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    entries(&groups)
        .find(|fields| fields.first() == Some(&group))
        .and_then(|fields| fields.get(2)?.parse().ok())
        .ok_or_else(|| format!("the image's group {group:?} is not in its /etc/group"))
}

/// The colon-separated fields of each line of a passwd or group file.
fn entries(file: &str) -> impl Iterator<Item = Vec<&str>> {
    file.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| line.split(':').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_in_the_images_files() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:101:102:web:/var/www:/bin/false\n",
        )
        .unwrap();
        fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let resolve = |spec| User::resolve(spec, root.path());
        assert_eq!(resolve("www"), Ok(User { uid: 101, gid: 102 }));
        assert_eq!(resolve("www:staff"), Ok(User { uid: 101, gid: 50 }));
        assert_eq!(
            resolve("1000:1000"),
            Ok(User {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(resolve("101"), Ok(User { uid: 101, gid: 102 }));
        assert!(resolve("nobody").unwrap_err().contains("/etc/passwd"));
        assert!(resolve("www:wheel").unwrap_err().contains("/etc/group"));
    }
}
