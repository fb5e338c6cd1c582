//! The serve benchmark (being written).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("the benchmark is not implemented yet")
}
