//! `lightning keygen`: a fresh seed and the SS58 hotkey it derives.

use clap::Args;
use lightning_tokio::Keypair;

use crate::seed::{random_seed, to_hex};

/// Options of `lightning keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Print one JSON line `{"seed": ..., "hotkey": ...}`.
    #[arg(long)]
    pub json: bool,
}

/// Prints a new random seed (hex) and its hotkey.
pub fn run(args: &KeygenArgs) {
    let seed = random_seed();
    let hotkey = Keypair::from_seed(&seed).hotkey();
    let seed_hex = to_hex(&seed);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "seed": seed_hex, "hotkey": hotkey })
        );
    } else {
        println!("seed:   {seed_hex}");
        println!("hotkey: {hotkey}");
        eprintln!("keep the seed secret: anyone holding it can sign as this hotkey");
    }
}
