//! `shoal-compactor`: the scheduled compaction service. This first version runs one
//! maintenance pass (checkpointing) over the tables given; bin-packing, Z-order and
//! scheduling come with their own issues.

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "shoal-compactor",
    version,
    about = "Compaction service for Shoal tables"
)]
struct Args {
    /// Run one pass over these tables and exit.
    #[arg(long)]
    once: bool,
    #[arg(long = "table")]
    tables: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !args.once {
        anyhow::bail!("only --once is available in this version");
    }
    let mut failures = 0;
    for t in &args.tables {
        let table = shoal_format::Table::at(t)?;
        match table.checkpoint().await {
            Ok(cp) => tracing::info!(table = %t, version = cp.version, "checkpointed"),
            Err(e) => {
                failures += 1;
                tracing::error!(table = %t, error = %e, "maintenance failed");
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} table(s) failed");
    }
    Ok(())
}
