//! Table tests beyond the README: every file in `cases/` in the
//! [`crate::support`] format.

use crate::support::check;

macro_rules! case_file {
    ($name:ident) => {
        #[test]
        fn $name() {
            let source = include_str!(concat!("cases/", stringify!($name), ".txt"));
            assert!(check(source, concat!("cases/", stringify!($name), ".txt")) > 0);
        }
    };
}

case_file!(precedence);
case_file!(nulls);
case_file!(arrays);
case_file!(coercions);
case_file!(lexing);
