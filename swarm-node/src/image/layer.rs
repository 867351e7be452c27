//! Unpacking one image layer into a directory that overlayfs stacks as a
//! lower layer. OCI whiteouts become overlayfs ones: `.wh.NAME` a 0:0
//! character device named NAME, `.wh..wh..opq` the `trusted.overlay.opaque`
//! attribute on its directory. Device files, FIFOs, ownership and
//! extended attributes are kept (the daemon runs as root).

use std::{
    ffi::CString,
    fs::{self, File},
    io::{self, BufReader, Read},
    os::unix::ffi::OsStrExt as _,
    path::{Component, Path, PathBuf},
};

use nix::{
    sys::stat::{Mode, SFlag, makedev, mknod},
    unistd::{Gid, Uid, chown},
};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque\0";

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// OCI's and Docker's layer media types; `None` for what is no layer.
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading the layer: {0}")]
    Read(#[source] io::Error),
    #[error("the layer's entry {path:?} cannot be unpacked: {source}")]
    Entry {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the layer's entry {0:?} points outside the layer")]
    Escapes(PathBuf),
}

/// Unpacks the layer in `blob` into `into`, which must exist and be empty.
pub fn unpack(blob: &Path, compression: Compression, into: &Path) -> Result<(), LayerError> {
    let file = BufReader::new(File::open(blob).map_err(LayerError::Read)?);
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(file).map_err(LayerError::Read)?)
        }
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        let path = entry.path().map_err(LayerError::Read)?.into_owned();
        let relative = inside(&path).ok_or_else(|| LayerError::Escapes(path.clone()))?;
        let failed = |source| LayerError::Entry {
            path: path.clone(),
            source,
        };
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let parent = into.join(relative.parent().unwrap_or(Path::new("")));
        match name.as_deref() {
            Some(OPAQUE_MARKER) => {
                fs::create_dir_all(&parent).map_err(failed)?;
                set_opaque(&parent).map_err(failed)?;
            }
            Some(name) if name.starts_with(WHITEOUT_PREFIX) => {
                fs::create_dir_all(&parent).map_err(failed)?;
                let hidden = parent.join(&name[WHITEOUT_PREFIX.len()..]);
                remove_any(&hidden).map_err(failed)?;
                mknod(&hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| failed(e.into()))?;
            }
            _ => {
                let kind = entry.header().entry_type();
                if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                    fs::create_dir_all(&parent).map_err(failed)?;
                    special_file(&entry, &into.join(&relative)).map_err(failed)?;
                } else {
                    entry.unpack_in(into).map_err(failed)?;
                }
            }
        }
    }
    Ok(())
}

/// `path` as a path inside the layer, `None` when it climbs out of it.
fn inside(path: &Path) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(relative)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_opaque(dir: &Path) -> io::Result<()> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let done = unsafe {
        libc::setxattr(
            path.as_ptr(),
            OPAQUE_XATTR.as_ptr().cast(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A device file or FIFO as its header describes it.
fn special_file<R: Read>(entry: &tar::Entry<'_, R>, at: &Path) -> io::Result<()> {
    let header = entry.header();
    let kind = header.entry_type();
    let flag = if kind.is_character_special() {
        SFlag::S_IFCHR
    } else if kind.is_block_special() {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFIFO
    };
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    let mode = Mode::from_bits_truncate(header.mode()? & 0o7777);
    remove_any(at)?;
    mknod(at, flag, mode, makedev(major.into(), minor.into()))?;
    chown(
        at,
        Some(Uid::from_raw(header.uid()? as u32)),
        Some(Gid::from_raw(header.gid()? as u32)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt as _;

    use super::*;

    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, contents) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match contents {
                Some(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    header.set_mode(0o644);
                    builder.append_data(&mut header, path, *bytes).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder.append_data(&mut header, path, io::empty()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn files_whiteouts_and_opaque_dirs_unpack_for_overlayfs() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("layer.tar.gz");
        fs::write(
            &blob,
            gzip(&layer(&[
                ("etc/", None),
                ("etc/motd", Some(b"hello\n")),
                ("etc/.wh.old.conf", Some(b"")),
                ("var/cache/", None),
                ("var/cache/.wh..wh..opq", Some(b"")),
            ])),
        )
        .unwrap();
        let into = dir.path().join("unpacked");
        fs::create_dir(&into).unwrap();
        unpack(&blob, Compression::Gzip, &into).unwrap();
        assert_eq!(fs::read(into.join("etc/motd")).unwrap(), b"hello\n");
        let whiteout = fs::symlink_metadata(into.join("etc/old.conf")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert!(!into.join("etc/.wh.old.conf").exists());
        let mut value = [0u8; 4];
        let path = CString::new(into.join("var/cache").as_os_str().as_bytes()).unwrap();
        // SAFETY: the buffers outlive the call.
        let len = unsafe {
            libc::getxattr(
                path.as_ptr(),
                OPAQUE_XATTR.as_ptr().cast(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(&value[..len.max(0) as usize], b"y");
    }

    #[test]
    fn entries_climbing_out_of_the_layer_are_refused() {
        assert_eq!(inside(Path::new("./a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(inside(Path::new("/a")), Some(PathBuf::from("a")));
        assert_eq!(inside(Path::new("a/../../etc")), None);
    }

    #[test]
    fn media_types_name_their_compression() {
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::of_media_type("application/json"), None);
    }
}
