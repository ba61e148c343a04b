//! Snapshots of `vault-gateway --help` and of its one-line error on a bad
//! configuration (`tests/cmd/*.toml`; refresh with `TRYCMD=overwrite`).

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}
