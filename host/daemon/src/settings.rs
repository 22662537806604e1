//! The mount settings, defined once as data: for each one its YAML key, unit, default, the
//! help text of the key (the JSON Schema description), and, if it has them, its command-line
//! flag and its `-o` option. The environment name is derived from the key
//! (`BLOBMOUNT_<SECTION>__<KEY>`, see [`Setting::env`]).
//!
//! Why a table: a setting used to exist in three shapes (the YAML structs, the clap flags,
//! the code laying flags over the file), kept in step by hand. Now `args` generates the
//! clap flags, the `-o` options and how both are applied from [`SETTINGS`]; `config` takes
//! the schema descriptions of its own sections from it; and the unit tests below fail when a
//! key of the YAML structs, a flag, an env name, a default or the docs reference disagree
//! with the table. The config structs stay the typed shape serde and the core read.
//!
//! Rows are in `blobmount mount --help` order for those with a flag, then by section.

use clap::ValueEnum;
use clap::builder::PossibleValue;
use serde_json::Value;

pub use crate::setting::{Flag, Opt, Range, Setting, Unit};

use crate::values::{LogFormat, LogOutput, Passthrough, ReadMode, Recovery};

/// The names of a `clap::ValueEnum` with their help, for [`Unit::Choice`].
pub fn choices<E: ValueEnum>() -> Vec<PossibleValue> {
    E::value_variants()
        .iter()
        .filter_map(ValueEnum::to_possible_value)
        .collect()
}

fn hns_modes() -> Vec<PossibleValue> {
    ["auto", "true", "false"]
        .into_iter()
        .map(PossibleValue::new)
        .collect()
}

fn name_conflict_rules() -> Vec<PossibleValue> {
    ["directory-keeps-name", "hide-file", "gcsfuse-newline"]
        .into_iter()
        .map(PossibleValue::new)
        .collect()
}

/// The setting with YAML key `key`.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Give every property of the config schema that has no description (the daemon's own
/// sections, whose fields carry no doc comments) its setting's help.
pub fn describe(schema: &mut Value) {
    for s in SETTINGS {
        let path = s.path();
        // Deeper keys (`store.retry.*`) belong to the backend's structs, described there.
        if path.len() != 2 {
            continue;
        }
        let Some(def) = schema
            .pointer(&format!("/properties/{}/$ref", path[0]))
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .map(str::to_string)
        else {
            continue;
        };
        let pointer = format!("/$defs/{def}/properties/{}", path[1]);
        if let Some(Value::Object(prop)) = schema.pointer_mut(&pointer)
            && !prop.contains_key("description")
            && !s.help.is_empty()
        {
            prop.insert("description".into(), Value::String(s.help.into()));
        }
    }
}

pub use crate::plugin_limits::{PLUGIN_LIMITS, PluginLimit};

/// Every mount setting.
pub static SETTINGS: &[Setting] = &[
    Setting::new(
        "store.url",
        Unit::Text,
        "null",
        "Store URL: `az://ACCOUNT/CONTAINER[/PREFIX]`, `s3://BUCKET[/PREFIX]`,\n\
         `gs://BUCKET[/PREFIX]`, `file:///ABSOLUTE/PATH`, or `mem://` (in-process, for trying out).",
    )
    .flag(Flag::positional("STORE_URL", "Store URL: az://ACCOUNT/CONTAINER[/PREFIX], s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], file:///PATH or mem://")),
    Setting::new(
        "mount.mountpoint",
        Unit::Path,
        "null",
        "Mount point (may be given on the command line instead).",
    )
    .flag(Flag::positional("MOUNTPOINT", "Directory to mount on")),
    Setting::new(
        "mount.foreground",
        Unit::Switch,
        "false",
        "Stay in the foreground instead of detaching once mounted.",
    )
    .flag(Flag::long("foreground", "Stay in the foreground").short('f'))
    .opt(Opt::Named("foreground")),
    Setting::new(
        "mount.read-only",
        Unit::Switch,
        "false",
        "Refuse every modification (EROFS).",
    )
    .flag(Flag::long("read-only", "Mount read-only"))
    .opt(Opt::OnOff("ro", "rw")),
    Setting::new(
        "mount.allow-other",
        Unit::Switch,
        "false",
        "Let users other than the mounting user access the mount (needs `user_allow_other` in\n\
         /etc/fuse.conf when not root).",
    )
    .flag(Flag::long("allow-other", "Allow other users to access the mount"))
    .opt(Opt::Named("allow_other")),
    Setting::new(
        "mount.uid",
        Unit::Id,
        "null",
        "Owner of objects that carry no `uid` metadata (default: the daemon's uid).",
    )
    .flag(Flag::long("uid", "Default owner uid"))
    .opt(Opt::Named("uid")),
    Setting::new(
        "mount.gid",
        Unit::Id,
        "null",
        "Group of objects that carry no `gid` metadata (default: the daemon's gid).",
    )
    .flag(Flag::long("gid", "Default owner gid"))
    .opt(Opt::Named("gid")),
    Setting::new(
        "mount.file-mode",
        Unit::Octal,
        "\"0644\"",
        "Permissions of files without `mode` metadata, octal (e.g. \"0644\").",
    )
    .flag(Flag::long("file-mode", "Default file permissions (octal)"))
    .opt(Opt::Named("file_mode")),
    Setting::new(
        "mount.dir-mode",
        Unit::Octal,
        "\"0755\"",
        "Permissions of directories without `mode` metadata, octal (e.g. \"0755\").",
    )
    .flag(Flag::long("dir-mode", "Default directory permissions (octal)"))
    .opt(Opt::Named("dir_mode")),
    Setting::new(
        "mount.subdirectory",
        Unit::Text,
        "null",
        "Mount only this sub-directory of the store URL's prefix.",
    )
    .flag(Flag::long("subdirectory", "Mount only this sub-directory of the store"))
    .opt(Opt::Named("subdirectory")),
    Setting::new(
        "store.endpoint",
        Unit::Text,
        "null",
        "Service endpoint override (emulators, S3-compatible stores, sovereign clouds), e.g.\n\
         `http://127.0.0.1:10000/devstoreaccount1` or `https://s3.eu-central-003.backblazeb2.com`.",
    )
    .flag(Flag::long("endpoint", "Store endpoint (emulators, S3-compatible services)"))
    .opt(Opt::Named("endpoint")),
    Setting::new(
        "store.ca-file",
        Unit::Path,
        "null",
        "PEM file of certificate authorities to trust besides the system's, for every\n\
         request to the store and its credential endpoints (a private CA, a proxy that\n\
         inspects TLS, an emulator's self-signed certificate).",
    ),
    Setting::new(
        "store.azure.hns",
        Unit::Choice(hns_modes),
        "\"auto\"",
        "Hierarchical namespace (ADLS Gen2): `auto` asks the account (Get Account Information), `true` uses the DFS endpoint for renames, directories and access control, `false` never does.",
    ),
    Setting::new(
        "store.azure.dfs-endpoint",
        Unit::Text,
        "null",
        "DFS endpoint of the account (default: the Blob endpoint with `.blob.` changed to `.dfs.`, e.g. `https://ACCOUNT.dfs.core.windows.net`); required with HNS for emulator-style endpoints such as `http://127.0.0.1:10000/devstoreaccount1`.",
    ),
    Setting::new(
        "cache.dir",
        Unit::Path,
        "null",
        "Cache directory (staging of written files, `conflicts/`). Created 0700. Default:\n\
         `$XDG_CACHE_HOME/blobmount/<id>` or `/var/cache/blobmount/<id>` for root.",
    )
    .flag(Flag::long("cache-dir", "Cache directory"))
    .opt(Opt::Named("cache_dir")),
    Setting::new(
        "mount.attr-timeout-secs",
        Unit::Seconds,
        "1.0",
        "Seconds attributes and names are trusted before the store is asked again.",
    )
    .flag(Flag::long("attr-timeout", "Seconds attributes are trusted"))
    .opt(Opt::Named("attr_timeout"))
    .range(0, 86400),
    Setting::new(
        "mount.fuse-fd-socket",
        Unit::Path,
        "null",
        "Receive an already mounted FUSE descriptor from `blobmount fuse-mounter` (or a CSI\n\
         driver) on this Unix socket instead of mounting; the daemon then needs no privileges.",
    )
    .flag(Flag::long("fuse-fd-socket", "Serve a FUSE descriptor received on this Unix socket from `blobmount fuse-mounter` instead of mounting (MOUNTPOINT, if given, is only used for health probes)").value_name("SOCKET")),
    Setting::new(
        "health.listen",
        Unit::Text,
        "\"127.0.0.1:0\"",
        "Address serving /healthz, /readyz, /metrics and /status. The default, port 0 on\n\
         loopback, picks a free port (`blobmount status` and `blobmount health` find it);\n\
         give a fixed address for HTTP probes and Prometheus; \"\" turns the endpoint off.",
    )
    .flag(Flag::long("health-listen", "Address of the health/metrics endpoint (\"\" turns it off)").value_name("ADDR")),
    Setting::new(
        "read.mode",
        Unit::Choice(choices::<ReadMode>),
        "\"block-cache\"",
        "`direct`, `block-cache` or `file-cache`.",
    )
    .flag(Flag::long("read-mode", "Read path: direct, block-cache (default) or file-cache"))
    .opt(Opt::Named("read_mode")),
    Setting::new(
        "read.preload",
        Unit::List,
        "[]",
        "Directories (relative to the mount, `\"\"` or `\"/\"` for everything) whose files are\n\
         downloaded into the file cache (file-cache mode) or whose metadata is loaded\n\
         (other modes) in the background after mounting.",
    )
    .flag(Flag::long("preload", "Preload this directory (relative to the mount; \"all\" or \"/\" for everything) in the background after mounting: into the file cache in file-cache mode, metadata otherwise. Repeatable").value_name("DIR|all"))
    .opt(Opt::Named("preload")),
    Setting::new(
        "logging.level",
        Unit::Text,
        "\"info\"",
        "Level or filter directive (`info`, `debug`, `blobmount_core=debug,info`); `RUST_LOG`\n\
         overrides it.",
    )
    .flag(Flag::long("log-level", "Log level or filter")),
    Setting::new(
        "logging.format",
        Unit::Choice(choices::<LogFormat>),
        "\"text\"",
        "Log line format: `text` or `json`.",
    )
    .flag(Flag::long("log-format", "Log format")),
    Setting::new(
        "store.retry.max-retries",
        Unit::Count,
        "5",
        "Retries of a failed request (5xx, throttling, connection errors); 0 disables.",
    )
    .range(0, 100),
    Setting::new(
        "store.retry.initial-backoff-ms",
        Unit::Millis,
        "100",
        "First backoff delay in milliseconds.",
    )
    .range(0, 60_000),
    Setting::new(
        "store.retry.max-backoff-ms",
        Unit::Millis,
        "10000",
        "Largest backoff delay in milliseconds.",
    )
    .range(0, 600_000),
    Setting::new(
        "store.retry.retry-timeout-secs",
        Unit::WholeSecs,
        "60",
        "Give up retrying a request after this many seconds.",
    )
    .range(0, 86_400),
    Setting::new(
        "store.retry.request-timeout-secs",
        Unit::WholeSecs,
        "120",
        "Timeout of one request, in seconds (a large ranged GET or part upload must fit).",
    )
    .range(0, 86_400),
    Setting::new(
        "store.retry.connect-timeout-secs",
        Unit::WholeSecs,
        "5",
        "TCP/TLS connect timeout in seconds.",
    )
    .range(0, 600),
    Setting::new(
        "store.retry.metadata-timeout-secs",
        Unit::WholeSecs,
        "30",
        "Longest a HEAD, LIST page or delete may take, retries included, in seconds; past it\n\
         the call fails (EIO) instead of holding a lookup for the request timeout. 0: only\n\
         the request timeout applies.",
    )
    .range(0, 3_600),
    Setting::new(
        "mount.threads",
        Unit::Count,
        "2",
        "FUSE worker threads reading requests from the kernel.",
    )
    .range(1, 64),
    Setting::new(
        "mount.rename-dir-limit",
        Unit::Count,
        "1000",
        "Largest directory (in objects) that `rename` moves; larger ones return EXDEV so\n\
         `mv` copies instead.",
    )
    .range(0, 1000000),
    Setting::new(
        "mount.kernel-read-ahead-kib",
        Unit::KiB,
        "1024",
        "Kernel read-ahead for the mount in KiB (`/sys/class/bdi/<dev>/read_ahead_kb`, set\n\
         after mounting when permitted). Larger kernel reads cut per-request overhead for\n\
         sequential readers; 0 leaves the kernel default (128).",
    )
    .range(0, 65536),
    Setting::new(
        "mount.shutdown-grace-secs",
        Unit::Seconds,
        "30.0",
        "On SIGTERM/SIGINT, seconds to spend uploading modified open files before unmounting.",
    )
    .range(0, 3600),
    Setting::new(
        "read.preload-jobs",
        Unit::Count,
        "8",
        "Files preloaded at once.",
    )
    .range(1, 256),
    Setting::new(
        "read.verify-min-mib",
        Unit::MiB,
        "8",
        "Objects at least this large, read from the first byte to the last by one handle in\n\
         `direct` or `block-cache` mode, are checked against the checksum the store reports\n\
         (CRC32C on GCS, MD5 elsewhere; one request per such read, at its end; a mismatch is\n\
         EIO). Smaller ones are not, so a\n\
         workload of small files keeps one request per read. 0 checks every object.",
    )
    .range(0, 1_048_576),
    Setting::new(
        "write.recovery",
        Unit::Choice(choices::<Recovery>),
        "\"upload\"",
        "What a mount does at start with writes a previous daemon left unfinished in the\n\
         cache directory (it was killed): `upload` them (conditional on the version they were\n\
         based on; a conflict keeps them) or `keep` them in `conflicts/` for you to look at.\n\
         Either way each one is reported in the log.",
    ),
    Setting::new(
        "write.streaming",
        Unit::Switch,
        "true",
        "Upload a new (or truncated) file written in order while it is being written, in\n\
         parts (S3 multipart, Azure blocks), so `close` only sends the rest and commits.\n\
         Nothing is visible before the commit. Files written out of order, and GCS, upload\n\
         at close.",
    ),
    Setting::new(
        "write.checksums",
        Unit::Switch,
        "true",
        "Send the MD5 of every upload request (whole objects and parts) so the store refuses\n\
         bytes damaged on the way (Azure `Content-MD5`, S3 `Content-MD5`, GCS `md5Hash`), and\n\
         give Azure block blobs their whole MD5. Costs one or two MD5 passes over the bytes\n\
         written (see \"Integrity\" in docs/semantics.md); `false` sends none.",
    ),
    Setting::new(
        "write.part-size-mib",
        Unit::MiB,
        "8",
        "Size of one streamed part, in MiB (5 to 512; S3 needs at least 5).",
    )
    .range(5, 512),
    Setting::new(
        "write.parts-in-flight",
        Unit::Count,
        "8",
        "Parts of one file uploaded at once. Their buffers count against\n\
         `cache.read-memory-mib`, shared with read-ahead.",
    )
    .range(1, 64),
    Setting::new(
        "write.attr-delay-ms",
        Unit::Millis,
        "200",
        "How long a change of mode, owner or times of a closed file is held before it is\n\
         written, so changes that follow each other (rsync's chmod, utimensat, rename) cost\n\
         one request. Written earlier by fsync, open, rename and unmount; a crash within\n\
         the delay loses it. 0 writes each change at once.",
    )
    .range(0, 5_000),
    Setting::new(
        "write.close-delay-ms",
        Unit::Millis,
        "0",
        "Write-behind: a file changed through the mount is uploaded this long after its last\n\
         close instead of at close. A rename within the delay of a new file moves it without\n\
         a copy in the store (rsync, editors and git write a temporary name and rename it):\n\
         one upload per file, carrying the mode and times set meanwhile. The price: close\n\
         returns before the data is stored, so a failed upload is logged and kept in\n\
         conflicts/, not reported to the program. fsync still uploads; unmount uploads all.\n\
         0 (the default) uploads at close.",
    )
    .range(0, 60_000),
    Setting::new(
        "write.content-types",
        Unit::Mapping,
        "{}",
        "Content type of uploaded files by extension, over the built-in table:\n\
         `{\".parquet\": \"application/vnd.apache.parquet\", \".log\": \"text/plain\"}`.\n\
         Extensions match in any case (the longest wins: `.tar.gz` before `.gz`); a type\n\
         must look like `type/subtype`. At most 1000 entries.",
    ),
    Setting::new(
        "write.content-type-default",
        Unit::Text,
        "\"application/octet-stream\"",
        "Content type of uploaded files whose extension is in neither\n\
         `write.content-types` nor the built-in table.",
    ),
    Setting::new(
        "cache.read-ahead-max-mib",
        Unit::MiB,
        "64",
        "Most data a sequential reader has prefetched ahead of it, in MiB (fetched as\n\
         `read-block-mib` blocks in parallel). 0 disables read-ahead.",
    )
    .range(0, 4096),
    Setting::new(
        "cache.read-block-mib",
        Unit::MiB,
        "8",
        "Size of one read-ahead block (one ranged GET), in MiB. 1 to 64.",
    )
    .range(1, 64),
    Setting::new(
        "cache.read-memory-mib",
        Unit::MiB,
        "512",
        "Memory all readers together may hold in read-ahead blocks, in MiB. Reads beyond it\n\
         fetch just the bytes asked for.",
    )
    .range(1, 1048576),
    Setting::new(
        "cache.list-page-size",
        Unit::Count,
        "5000",
        "Objects requested per listing call (Azure answers up to 5000, S3 and GCS up to 1000\n\
         whatever is asked). A directory that fits in one page is listed whole by a lookup of\n\
         a name it does not know, rather than that name being probed.",
    )
    .range(1, 5000),
    Setting::new(
        "cache.list-ttl-secs",
        Unit::Seconds,
        "1.0",
        "Seconds a directory listing is reused: by `ls` again, and by lookups (a listed file\n\
         needs one HEAD, a name missing from the listing none). A listing that took longer\n\
         than this to read is reused for as long as it took. 0 disables.",
    )
    .range(0, 86400),
    Setting::new(
        "cache.negative-ttl-secs",
        Unit::Seconds,
        "1.0",
        "Seconds a name found absent stays absent without asking the store. 0 disables.",
    )
    .range(0, 86400),
    Setting::new(
        "cache.list-cache-max-entries",
        Unit::Count,
        "1000000",
        "Most directory entries all cached listings hold together (about 100-200 bytes\n\
         each); the least recently listed directories are dropped beyond it.",
    )
    .range(1, 100000000),
    Setting::new(
        "cache.file-cache-max-mib",
        Unit::MiB,
        "10240",
        "Most disk the file cache (`read.mode: file-cache`) uses for downloaded objects, in\n\
         MiB. Least recently used objects nobody has open are evicted; bigger objects are\n\
         read through the block cache.",
    )
    .range(0, 1073741824),
    Setting::new(
        "cache.file-cache-min-free-mib",
        Unit::MiB,
        "1024",
        "Disk space the file cache leaves free on its file system, in MiB.",
    )
    .range(0, 1073741824),
    Setting::new(
        "cache.file-cache-range-reads",
        Unit::Switch,
        "true",
        "Whether an open file whose first read is not at offset 0 (a range read) downloads\n\
         the whole object into the file cache in the background. With `false` such a handle\n\
         reads just its ranges through the block cache, and only a read from the start of\n\
         the file downloads it.",
    ),
    Setting::new(
        "cache.file-cache-passthrough",
        Unit::Choice(choices::<Passthrough>),
        "\"auto\"",
        "Kernel passthrough for files whose current version is complete in the file cache:\n\
         a read-only open is answered with the cached copy and the kernel reads it itself,\n\
         at local-disk speed with no daemon CPU per byte (Linux 6.9+ and CAP_SYS_ADMIN;\n\
         without them files are read through the daemon). `auto` uses it on read-only\n\
         mounts; `always` also on read-write mounts, where opening a file for writing (or\n\
         truncating it) while it is open through passthrough waits up to 1 s for those\n\
         opens to close and then fails with ETXTBSY; `never` turns it off.",
    ),
    Setting::new(
        "cache.poll-secs",
        Unit::Seconds,
        "0.0",
        "Seconds between rounds of the background poller, which asks the store about\n\
         recently used directories (one listing each) and open files (one HEAD each) and drops\n\
         what another client changed, so outside changes show within about this long whatever\n\
         the TTLs. 0 (the default) turns it off.",
    )
    .range(0, 86400),
    Setting::new(
        "cache.poll-recent-secs",
        Unit::Seconds,
        "300.0",
        "A directory looked up in or listed, or a file opened, within this many seconds is\n\
         revalidated by the poller (open files always are).",
    )
    .range(1, 86400),
    Setting::new(
        "cache.poll-max-dirs",
        Unit::Count,
        "32",
        "Most directories the poller lists per round (most recently used first).",
    )
    .range(0, 100000),
    Setting::new(
        "cache.poll-max-files",
        Unit::Count,
        "64",
        "Most files the poller asks about (one HEAD each) per round: open or recently opened\n\
         files whose directory it did not list.",
    )
    .range(0, 100000),
    Setting::new(
        "cache.poll-max-entries",
        Unit::Count,
        "5000",
        "The poller skips a directory holding more objects than this (its listing would cost\n\
         more than it finds).",
    )
    .range(1, 10000000),
    Setting::new(
        "monitor.enabled",
        Unit::Switch,
        "false",
        "Append a report (one JSON line: CPU, memory, file-cache and block-cache use, bytes\n\
         to and from the store, FUSE operation counts) to `monitor.output` every\n\
         `monitor.interval-secs` (BlobFuse2's health monitor).",
    )
    .flag(Flag::long("monitor", "Write the health monitor's report (monitor.output) every monitor.interval-secs")),
    Setting::new(
        "monitor.interval-secs",
        Unit::Seconds,
        "10.0",
        "Seconds between two reports of the health monitor.",
    )
    .range(1, 86_400),
    Setting::new(
        "monitor.output",
        Unit::Path,
        "null",
        "The health monitor's report file (`{pid}` is replaced by the daemon's PID). Default:\n\
         `monitor.jsonl` in the cache directory.",
    ),
    Setting::new(
        "monitor.disable",
        Unit::List,
        "[]",
        "Parts left out of the report: `cpu`, `memory`, `file-cache`, `block-cache`,\n\
         `network`, `ops`.",
    ),
    Setting::new(
        "monitor.max-size-mib",
        Unit::MiB,
        "10",
        "Size in MiB at which the report file is rotated (renamed FILE.1, older ones shifted\n\
         up to FILE.<max-files>).",
    )
    .range(1, 1024),
    Setting::new(
        "monitor.max-files",
        Unit::Count,
        "9",
        "Rotated report files kept beside the report file.",
    )
    .range(1, 100),
    Setting::new(
        "logging.file",
        Unit::Path,
        "null",
        "Append logs to this file instead of standard error (mode 0600; rotated by size, and\n\
         reopened at this path on SIGHUP).",
    ),
    Setting::new(
        "logging.output",
        Unit::Choice(choices::<LogOutput>),
        "\"auto\"",
        "Where log lines go: `auto` (`file` when `logging.file` is set, else `stderr`),\n\
         `stderr`, `file`, `syslog` or `journald`.",
    ),
    Setting::new(
        "logging.socket",
        Unit::Path,
        "null",
        "Socket of the `syslog` or `journald` output (default: /dev/log or\n\
         /run/systemd/journal/socket).",
    ),
    Setting::new(
        "logging.max-size-mib",
        Unit::MiB,
        "100",
        "Size in MiB at which the log file is rotated (renamed FILE.1, older ones shifted up to\n\
         FILE.<max-files>); 0 never rotates (for logrotate, with SIGHUP).",
    )
    .range(0, 1_048_576),
    Setting::new(
        "logging.max-files",
        Unit::Count,
        "5",
        "Rotated log files kept beside the log file.",
    )
    .range(1, 100),
    Setting::new(
        "policy.filter",
        Unit::Mapping,
        "{\"exclude\": [], \"include\": [], \"max-age-secs\": null, \"max-size\": null, \"min-size\": null, \"read-only\": []}",
        "Which objects are shown, and which are read-only (globs, size and age limits).",
    ),
    Setting::new(
        "policy.name-conflict",
        Unit::Choice(name_conflict_rules),
        "\"directory-keeps-name\"",
        "What a file sharing its name with a directory is shown as: `directory-keeps-name`\n\
         (the file gets `.~file`), `hide-file`, or `gcsfuse-newline`.",
    ),
    Setting::new(
        "policy.revalidate-on-open",
        Unit::Switch,
        "false",
        "Every open asks the store for the object's current version, whatever the stat TTL.",
    ),
    Setting::new(
        "policy.cacheable",
        Unit::Switch,
        "true",
        "Set to false to keep file data out of the kernel page cache and the file cache.",
    ),
];
