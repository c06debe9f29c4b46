//! README.md lists every rejection with its status and code, as the one table in the crate
//! defines them.

use ringyo_webhook::RejectionKind;

#[test]
fn readme_lists_every_rejection_with_its_status_and_code() {
    let readme = include_str!("../README.md");
    for kind in RejectionKind::ALL {
        let row = format!("| {} | `{}` |", kind.status().as_u16(), kind.code());
        assert!(
            readme.contains(&row),
            "README.md has no row `{row}` for {kind:?}"
        );
    }
}
