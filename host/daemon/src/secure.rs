//! Encrypted configuration files (BlobFuse2's `secure` command and `--secure-config`): the
//! whole file sealed with AES-256-GCM under a key derived from a passphrase by Argon2id, so
//! a config holding an account key or a client secret can sit on disk, in an image or in a
//! repository without exposing them.
//!
//! File format (text, one line): `blobmount-secure-v1:` then base64 of salt (16 bytes),
//! nonce (12 bytes) and the sealed bytes (ciphertext and 16-byte tag). Argon2id with 64 MiB,
//! 3 passes, 1 lane: a guess costs a wrong-passphrase attacker that much memory and time.
//! A wrong passphrase and a damaged file give the same error, which never shows any of the
//! file's content.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::exit::{EXIT_CONFIG, fail};

const MAGIC: &str = "blobmount-secure-v1:";
const SALT_LEN: usize = 16;
/// Environment variable holding the passphrase when no flag gives one.
pub const PASSPHRASE_ENV: &str = "BLOBMOUNT_SECURE_PASSPHRASE";

/// Where the passphrase comes from.
#[derive(Clone, Debug, Default)]
pub struct Passphrase {
    pub value: Option<String>,
    pub file: Option<PathBuf>,
}

impl Passphrase {
    /// The passphrase: `--passphrase`, else `--passphrase-file`, else the environment.
    pub fn get(&self) -> Result<Zeroizing<String>, String> {
        if let Some(v) = &self.value {
            return checked(Zeroizing::new(v.clone()));
        }
        if let Some(f) = &self.file {
            let t = std::fs::read_to_string(f)
                .map_err(|e| format!("passphrase file {}: {e}", f.display()))?;
            return checked(Zeroizing::new(t.trim_end_matches(['\n', '\r']).to_string()));
        }
        match std::env::var(PASSPHRASE_ENV) {
            Ok(v) => checked(Zeroizing::new(v)),
            Err(_) => Err(format!(
                "no passphrase: give --passphrase, --passphrase-file or {PASSPHRASE_ENV}"
            )),
        }
    }
}

fn checked(p: Zeroizing<String>) -> Result<Zeroizing<String>, String> {
    if p.len() < 8 {
        return Err("the passphrase must be at least 8 characters".into());
    }
    Ok(p)
}

fn derive(pass: &str, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(64 * 1024, 3, 1, Some(32)).map_err(|e| e.to_string())?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass.as_bytes(), salt, key.as_mut())
        .map_err(|e| format!("key derivation: {e}"))?;
    Ok(key)
}

fn aead(key: &[u8; 32]) -> Result<LessSafeKey, String> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| "bad key length".to_string())?,
    ))
}

/// Seal `plain` under `pass`.
pub fn encrypt(plain: &[u8], pass: &str) -> Result<String, String> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt).map_err(|_| "no randomness")?;
    rng.fill(&mut nonce).map_err(|_| "no randomness")?;
    let key = derive(pass, &salt)?;
    let mut buf = plain.to_vec();
    aead(&key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(MAGIC),
            &mut buf,
        )
        .map_err(|_| "encryption failed")?;
    let mut all = Vec::with_capacity(SALT_LEN + NONCE_LEN + buf.len());
    all.extend_from_slice(&salt);
    all.extend_from_slice(&nonce);
    all.extend_from_slice(&buf);
    Ok(format!(
        "{MAGIC}{}\n",
        base64::engine::general_purpose::STANDARD.encode(all)
    ))
}

/// Open a sealed file's text. Every failure (not such a file, damaged, wrong passphrase)
/// says only that.
pub fn decrypt(sealed: &str, pass: &str) -> Result<Zeroizing<String>, String> {
    const OPAQUE: &str = "cannot decrypt: wrong passphrase, or not a file `blobmount secure encrypt` wrote, or damaged";
    let b64 = sealed.trim().strip_prefix(MAGIC).ok_or(OPAQUE)?;
    let all = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| OPAQUE)?;
    if all.len() < SALT_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(OPAQUE.into());
    }
    let (salt, rest) = all.split_at(SALT_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let key = derive(pass, salt)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OPAQUE)?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let plain = aead(&key)?
        .open_in_place(nonce, Aad::from(MAGIC), &mut buf)
        .map_err(|_| OPAQUE)?;
    let text = String::from_utf8(plain.to_vec()).map_err(|_| OPAQUE)?;
    Ok(Zeroizing::new(text))
}

/// Whether `text` is a sealed file (so a mount can say "this needs --secure-config").
pub fn is_sealed(text: &str) -> bool {
    text.trim_start().starts_with(MAGIC)
}

/// `blobmount secure encrypt|decrypt|get|set`.
#[derive(clap::Subcommand, Debug)]
pub enum SecureCmd {
    /// Encrypt a config file (to --output-file, else FILE.aes).
    Encrypt(Args),
    /// Decrypt an encrypted config file (to --output-file, else stdout).
    Decrypt(Args),
    /// Print one key of an encrypted config (`section.key`).
    Get {
        #[command(flatten)]
        args: Args,
        #[arg(long)]
        key: String,
    },
    /// Set one key of an encrypted config (`section.key`) and write it back encrypted.
    Set {
        #[command(flatten)]
        args: Args,
        #[arg(long)]
        key: String,
        #[arg(long)]
        value: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long = "config-file")]
    pub config_file: PathBuf,
    #[arg(long)]
    pub passphrase: Option<String>,
    /// A file holding the passphrase (trailing newline ignored).
    #[arg(long = "passphrase-file")]
    pub passphrase_file: Option<PathBuf>,
    #[arg(long = "output-file")]
    pub output_file: Option<PathBuf>,
}

impl Args {
    fn pass(&self) -> Result<Zeroizing<String>, String> {
        Passphrase {
            value: self.passphrase.clone(),
            file: self.passphrase_file.clone(),
        }
        .get()
    }

    fn read(&self) -> Result<String, String> {
        std::fs::read_to_string(&self.config_file)
            .map_err(|e| format!("{}: {e}", self.config_file.display()))
    }
}

/// Write `data` to `p` readable by its owner only (also when `p` already existed with a
/// wider mode): it holds credentials.
pub(crate) fn write_private(p: &Path, data: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.write_all(data.as_bytes())
        .map_err(|e| format!("{}: {e}", p.display()))
}

pub fn main(cmd: SecureCmd) -> ExitCode {
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_CONFIG, e),
    }
}

fn run(cmd: SecureCmd) -> Result<(), String> {
    match cmd {
        SecureCmd::Encrypt(a) => {
            let sealed = encrypt(a.read()?.as_bytes(), &a.pass()?)?;
            let out = a.output_file.clone().unwrap_or_else(|| {
                let mut p = a.config_file.clone().into_os_string();
                p.push(".aes");
                PathBuf::from(p)
            });
            write_private(&out, &sealed)?;
            eprintln!("encrypted {} to {}", a.config_file.display(), out.display());
            Ok(())
        }
        SecureCmd::Decrypt(a) => {
            let plain = decrypt(&a.read()?, &a.pass()?)?;
            match &a.output_file {
                Some(o) => write_private(o, &plain),
                None => {
                    print!("{}", plain.as_str());
                    Ok(())
                }
            }
        }
        SecureCmd::Get { args, key } => {
            let plain = decrypt(&args.read()?, &args.pass()?)?;
            let tree = crate::config::parse_yaml(&plain)?;
            let v = key
                .split('.')
                .try_fold(&tree, |v, k| v.get(k))
                .ok_or_else(|| format!("no key {key}"))?;
            match v {
                serde_json::Value::String(s) => println!("{s}"),
                other => println!("{other}"),
            }
            Ok(())
        }
        SecureCmd::Set { args, key, value } => {
            let pass = args.pass()?;
            let plain = decrypt(&args.read()?, &pass)?;
            let mut tree = crate::config::parse_yaml(&plain)?;
            let parts: Vec<&str> = key.split('.').collect();
            let mut cur = &mut tree;
            for p in &parts[..parts.len() - 1] {
                if !cur.get(*p).is_some_and(serde_json::Value::is_object) {
                    cur[*p] = serde_json::Value::Object(Default::default());
                }
                cur = &mut cur[*p];
            }
            // Text, except true/false (numbers stay text: keys, ids and names may be digits).
            cur[parts[parts.len() - 1]] = match value.as_str() {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                _ => serde_json::Value::String(value),
            };
            let text = Zeroizing::new(serde_saphyr::to_string(&tree).map_err(|e| e.to_string())?);
            let out = args.output_file.clone().unwrap_or(args.config_file.clone());
            write_private(&out, &encrypt(text.as_bytes(), &pass)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_passphrases_say_nothing() {
        let text = "azstorage:\n  account-key: SECRET-KEY-VALUE\n";
        let sealed = encrypt(text.as_bytes(), "correct horse").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("SECRET"));
        assert_eq!(decrypt(&sealed, "correct horse").unwrap().as_str(), text);
        let e = decrypt(&sealed, "wrong horse!").unwrap_err();
        assert!(
            e.contains("wrong passphrase") && !e.contains("SECRET"),
            "{e}"
        );
        // Damaged anywhere: refused.
        let mut bad = sealed.trim().to_string();
        let flip = bad.pop().map(|c| if c == 'A' { 'B' } else { 'A' }).unwrap();
        bad.push(flip);
        assert!(decrypt(&bad, "correct horse").is_err());
        assert!(decrypt(text, "correct horse").is_err());
        // Two encryptions of the same text differ (fresh salt and nonce).
        assert_ne!(encrypt(text.as_bytes(), "correct horse").unwrap(), sealed);
        assert!(checked(Zeroizing::new("short".into())).is_err());
    }
}
