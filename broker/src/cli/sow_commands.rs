//! The State-of-the-World client commands: `sow` (print a query's
//! records), `sow-and-subscribe` (the records, then the live messages) and
//! `sow-delete` (print how many records were deleted).

use anyhow::{Context as _, bail};
use statecast_client::{SowDeleteBy, SowItem, SowOptions, SowRecord};

use super::client_commands::{Printed, connect, deadline, next_bounded, print_line, render};
use super::{Format, ServerArg};

/// The query flags `sow` and `sow-and-subscribe` share.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// SOW topic, or a topic pattern (a regular expression) whose SOW
    /// topics are all queried.
    #[arg(long)]
    topic: String,
    /// Content filter expression: only the records it matches.
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// At most this many records (per topic).
    #[arg(long, value_name = "N")]
    top_n: Option<u64>,
    /// Skip this many matching records first (per topic).
    #[arg(long, value_name = "N")]
    skip_n: Option<u64>,
    /// Sort order: `/path [ASC|DESC]`, comma-separated (ascending by default).
    #[arg(long, value_name = "FIELD")]
    order_by: Option<String>,
    /// Only the records with these SowKeys (decimal, as printed by `--format json`).
    #[arg(long = "key", value_name = "K", num_args = 1..)]
    keys: Vec<u64>,
    /// Up to this many records per frame of the answer (1 to 10000; the
    /// broker's default is 1). The records printed are the same either way.
    #[arg(long, value_name = "N")]
    batch_size: Option<u32>,
    /// Output format (`json`: `{"cmd":"sow"|"publish","topic","key","bookmark","data"}`).
    #[arg(long, value_enum, default_value_t = Format::Data)]
    format: Format,
}

impl QueryArgs {
    fn options(&self) -> SowOptions {
        let mut options = SowOptions::topic(&self.topic).sow_keys(self.keys.iter().copied());
        options.filter.clone_from(&self.filter);
        options.order_by.clone_from(&self.order_by);
        options.top_n = self.top_n;
        options.skip_n = self.skip_n;
        options.batch_size = self.batch_size;
        options
    }
}

/// Arguments of `sow`.
#[derive(Debug, clap::Args)]
pub struct SowArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    query: QueryArgs,
    /// Print only the number of matching records, as `{"count":N}`.
    #[arg(long)]
    count: bool,
}

/// Arguments of `sow-and-subscribe`.
#[derive(Debug, clap::Args)]
pub struct SowAndSubscribeArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    query: QueryArgs,
    /// Exit after printing this many records and messages together.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Exit after this many seconds (with status 1 if --count was not reached).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
}

/// Arguments of `sow-delete`: exactly one of --filter, --key, --example.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("selector").required(true).args(["filter", "keys", "example"]))]
pub struct SowDeleteArgs {
    #[command(flatten)]
    server: ServerArg,
    /// SOW topic (literal).
    #[arg(long)]
    topic: String,
    /// Delete the records matching this filter (`1=1`: all of them).
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Delete the records with these SowKeys.
    #[arg(long = "key", value_name = "K", num_args = 1..)]
    keys: Vec<u64>,
    /// Delete the record with this example message's key (e.g. `{"id":7}`).
    #[arg(long, value_name = "JSON")]
    example: Option<String>,
}

fn printed(record: &SowRecord) -> Printed<'_> {
    Printed {
        cmd: "sow",
        topic: record.topic.as_str(),
        key: Some(record.key),
        bookmark: record.bookmark,
        payload: &record.payload,
    }
}

/// `statecast sow`.
pub async fn sow(args: SowArgs) -> anyhow::Result<()> {
    let client = connect(&args.server.server, "sow").await?;
    let mut options = args.query.options();
    options.count_only = args.count;
    let mut results = client.sow(options).await.context("the query was refused")?;
    if args.count {
        let count = results.count().await.context("the query failed")?;
        println!("{}", serde_json::json!({ "count": count }));
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    while let Some(record) = futures::StreamExt::next(&mut results).await {
        let record = record.context("the query failed")?;
        if !print_line(&mut stdout, &render(&printed(&record), args.query.format))? {
            return Ok(());
        }
    }
    Ok(())
}

/// `statecast sow-and-subscribe`.
pub async fn sow_and_subscribe(args: SowAndSubscribeArgs) -> anyhow::Result<()> {
    let deadline = deadline(args.timeout)?;
    let client = connect(&args.server.server, "sow-and-subscribe").await?;
    let mut subscription = client
        .sow_and_subscribe(args.query.options())
        .await
        .context("the query was refused")?;
    let mut printed_lines = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let Some(next) = next_bounded(
            &mut subscription,
            printed_lines,
            args.count,
            deadline,
            args.timeout,
        )
        .await?
        else {
            return Ok(());
        };
        let line = match next {
            Some(Ok(SowItem::Record(record))) => render(&printed(&record), args.query.format),
            Some(Ok(SowItem::Message(message))) => {
                render(&Printed::from(&message), args.query.format)
            }
            Some(Ok(SowItem::EndOfSnapshot { .. })) => continue,
            Some(Err(error)) => return Err(error).context("the subscription ended"),
            None => bail!("the subscription ended"),
        };
        if !print_line(&mut stdout, &line)? {
            return Ok(());
        }
        printed_lines += 1;
    }
}

/// `statecast sow-delete`.
pub async fn sow_delete(args: SowDeleteArgs) -> anyhow::Result<()> {
    let by = match (args.filter, args.keys.is_empty(), args.example) {
        (Some(filter), true, None) => SowDeleteBy::Filter(filter),
        (None, false, None) => SowDeleteBy::Keys(args.keys),
        (None, true, Some(example)) => SowDeleteBy::Example(example.into()),
        // clap's group allows exactly one.
        _ => bail!("give exactly one of --filter, --key, --example"),
    };
    let client = connect(&args.server.server, "sow-delete").await?;
    let deleted = match by {
        SowDeleteBy::Filter(filter) => client.sow_delete_filter(&args.topic, &filter).await,
        SowDeleteBy::Keys(keys) => client.sow_delete_keys(&args.topic, &keys).await,
        SowDeleteBy::Example(example) => client.sow_delete_example(&args.topic, example).await,
    }
    .context("the delete failed")?;
    println!("{}", serde_json::json!({ "deleted": deleted }));
    Ok(())
}
