// Placeholder so the workspace manifest parses until the filter bench is written.
fn main() {}
