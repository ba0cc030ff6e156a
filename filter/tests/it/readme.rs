//! Runs every example in README.md's ```` ```filter ```` blocks, so the
//! reference and the implementation cannot drift apart.

use crate::support::check_lines;

const README: &str = include_str!("../../README.md");

#[test]
fn readme_examples_hold() {
    let mut total = 0;
    let mut block: Option<Vec<(usize, &str)>> = None;
    for (i, line) in README.lines().enumerate() {
        match (&mut block, line.trim_end()) {
            (None, "```filter") => block = Some(Vec::new()),
            (Some(lines), "```") => {
                total += check_lines(std::mem::take(lines), "README.md");
                block = None;
            }
            (Some(lines), _) => lines.push((i + 1, line)),
            (None, _) => {}
        }
    }
    assert!(block.is_none(), "unclosed ```filter block in README.md");
    // A guard against the extraction silently finding nothing.
    assert!(total >= 240, "only {total} README examples found");
}

#[test]
fn readme_names_every_function() {
    for function in statecast_filter::Function::ALL {
        let needle = format!("`{}(", function.name());
        assert!(
            README.contains(&needle),
            "README.md does not document {}",
            function.name()
        );
        let example = format!("{}(", function.name());
        let used = README
            .lines()
            .filter(|l| l.contains('→'))
            .any(|l| l.to_ascii_uppercase().contains(&example));
        assert!(used, "README.md has no example of {}", function.name());
    }
}
