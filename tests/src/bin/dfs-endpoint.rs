//! Run the ADLS Gen2 (DFS) test endpoint by hand in front of a running Azurite:
//! `cargo run -p blobmount-tests --bin dfs-endpoint -- [AZURITE_BLOB_PORT]` (default 10000).
//! Prints the two ports and serves until killed.

use blobmount_tests::dfs::DfsEndpoint;

fn main() {
    let port = match std::env::args().nth(1) {
        None => 10000,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("usage: dfs-endpoint [AZURITE_BLOB_PORT]");
                std::process::exit(2);
            }
        },
    };
    let ep = DfsEndpoint::start(port);
    println!("dfs_port={}", ep.dfs_port());
    println!("blob_port={}", ep.blob_port());
    println!("dfs endpoint:  {}", ep.dfs_endpoint());
    println!("blob endpoint: {}", ep.blob_endpoint());
    loop {
        std::thread::park();
    }
}
