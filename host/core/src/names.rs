//! Mapping object-key segments to directory-entry names.
//!
//! Object stores allow names Linux cannot show (`a//b` has an empty segment, `.`/`..`, names
//! over 255 bytes, NUL) and collisions (`foo` as an object and `foo/` as a prefix). This module
//! decides, deterministically, the name each key segment gets (DESIGN §3, built-in default of
//! the name-conflict policy): a directory keeps `foo`, the colliding file is shown as
//! `foo` + [`FILE_SUFFIX`]; invalid names get an escaped stand-in. The policy crate will make
//! this pluggable.

pub const FILE_SUFFIX: &str = ".~file";
pub const NAME_MAX: usize = 255;

/// 64-bit FNV-1a, stable across runs and platforms (used for stand-in names).
pub fn fnv1a(s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// True if `seg` can be shown as a Linux directory entry as is.
pub fn is_valid(seg: &str) -> bool {
    !seg.is_empty() && seg != "." && seg != ".." && seg.len() <= NAME_MAX && !seg.contains('\0')
}

/// The entry name shown for a key segment that is not a valid Linux name.
pub fn stand_in(seg: &str) -> String {
    match seg {
        "" => "~empty".into(),
        "." => "~dot".into(),
        ".." => "~dotdot".into(),
        _ => {
            let clean: String = seg.replace('\0', "~");
            let mut cut = 200.min(clean.len());
            while !clean.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}~{:016x}", &clean[..cut], fnv1a(seg.as_bytes()))
        }
    }
}

/// Check a name given by the kernel for creation.
pub fn check_new(name: &str) -> Result<(), crate::FsError> {
    if name.len() > NAME_MAX {
        return Err(crate::FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(crate::FsError::Invalid("bad name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_are_valid_and_stable() {
        let long = "x".repeat(300);
        for s in ["", ".", "..", long.as_str(), "a\0b"] {
            let n = stand_in(s);
            assert!(is_valid(&n), "{n}");
            assert_eq!(n, stand_in(s));
        }
        assert_ne!(stand_in(&"y".repeat(256)), stand_in(&"y".repeat(257)));
        assert!(is_valid(&"z".repeat(255)));
    }
}
