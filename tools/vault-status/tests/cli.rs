//! Snapshots of `vault-status --help` and of the one-line errors of common
//! mistakes (`tests/cmd/*.toml`; refresh with `TRYCMD=overwrite`).

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}
