//! Tests of `[series]`: frequency detection, generated features, the plan.

use super::frequency::*;
use super::*;
use chrono::Weekday;

/// 2017-01-02 00:00 UTC, a Monday: 17168 days after 1970-01-01 (a Thursday;
/// 17168 = 7·2452 + 4, Thursday + 4 = Monday).
const MON: i64 = 17_168 * DAY_MS;

#[test]
fn monday_is_monday() {
    assert_eq!(weekday(MON), Some(Weekday::Mon));
}

/// Hourly timestamps over four full weeks: every day has 24 rows.
#[test]
fn hourly() {
    let t: Vec<i64> = (0..24 * 28).map(|i| MON + i * HOUR_MS).collect();
    let d = detect(&t);
    assert_eq!(d.frequency, Frequency::SubDaily { step_ms: HOUR_MS });
    assert_eq!((d.season, d.rows_per_day, d.median_gap_ms), (Some(24), Some(24), Some(HOUR_MS)));
    assert_eq!(d.frequency.to_string(), "hourly");
}

/// FX hours: Sunday 22:00 to Friday 21:00, weekends absent. Mon–Thu have 24 rows,
/// so the season stays 24 though one gap a week is 49 h.
#[test]
fn hourly_with_weekend_gaps() {
    let sunday_22 = MON - 2 * HOUR_MS;
    let t: Vec<i64> = (0..8)
        .flat_map(|w| (0..(2 + 4 * 24 + 22)).map(move |h| sunday_22 + w * 7 * DAY_MS + h * HOUR_MS))
        .collect();
    let d = detect(&t);
    assert_eq!(d.frequency, Frequency::SubDaily { step_ms: HOUR_MS });
    assert_eq!(d.season, Some(24));
}

/// A stock's hourly bars 09:30–15:30 (7 a day), weekdays only: season 7, one day.
#[test]
fn hourly_session() {
    let t: Vec<i64> = (0..20)
        .filter(|d| d % 7 < 5)
        .flat_map(|d| (0..7).map(move |h| MON + d * DAY_MS + 9 * HOUR_MS + 30 * 60_000 + h * HOUR_MS))
        .collect();
    let d = detect(&t);
    assert_eq!((d.frequency, d.season, d.rows_per_day), (Frequency::SubDaily { step_ms: HOUR_MS }, Some(7), Some(7)));
}

/// A daily file in scrambled order is still daily (the gaps are those of the
/// sorted times), and the plan counts the rows that go back in time: here the
/// order 0, 2, 1, 4, 3, … goes back at every second row.
#[test]
fn unsorted_file_is_detected_and_flagged() {
    let t: Vec<i64> = (0..100).map(|i| MON + (if i % 2 == 1 && i + 1 < 100 { i + 1 } else if i % 2 == 0 && i > 0 { i - 1 } else { i }) * DAY_MS).collect();
    let d = detect(&t);
    assert_eq!((d.frequency, d.season), (Frequency::Daily, Some(7)));
    assert_eq!(d.out_of_order, 49);
    let sorted: Vec<i64> = (0..100).map(|i| MON + i * DAY_MS).collect();
    assert_eq!(detect(&sorted).out_of_order, 0);
}

#[test]
fn daily_and_business_daily() {
    let daily: Vec<i64> = (0..100).map(|i| MON + i * DAY_MS).collect();
    let d = detect(&daily);
    assert_eq!((d.frequency, d.season), (Frequency::Daily, Some(7)));
    // Weekdays only, with one holiday (day 16, a Wednesday) missing.
    let business: Vec<i64> = (0..140).filter(|i| i % 7 < 5 && *i != 16).map(|i| MON + i * DAY_MS).collect();
    assert_eq!(weekday(MON + 16 * DAY_MS), Some(Weekday::Wed));
    let d = detect(&business);
    assert_eq!((d.frequency, d.season, d.median_gap_ms), (Frequency::BusinessDaily, Some(5), Some(DAY_MS)));
    assert_eq!(d.frequency.to_string(), "business-daily");
}

#[test]
fn other_frequencies() {
    let every = |step: i64, n: i64| (0..n).map(|i| MON + i * step).collect::<Vec<_>>();
    assert_eq!(detect(&every(7 * DAY_MS, 60)).frequency, Frequency::Weekly);
    assert_eq!(detect(&every(7 * DAY_MS, 60)).season, Some(52));
    // Fifteen-minute data: 96 rows a day.
    let q = detect(&every(15 * 60_000, 96 * 5));
    assert_eq!((q.frequency, q.season), (Frequency::SubDaily { step_ms: 900_000 }, Some(96)));
    assert_eq!(q.frequency.to_string(), "every 15m");
    // Minutes: the 2000 timestamps looked at span no whole day, and 1440 rows a day
    // would be beyond a usable season anyway.
    let mi = detect(&every(60_000, 1440 * 3));
    assert_eq!((mi.frequency, mi.season, mi.timestamps), (Frequency::SubDaily { step_ms: 60_000 }, None, SAMPLE_ROWS));
    // Five minutes: 2000 timestamps are ~7 days; 288 rows a day is the season.
    let five = detect(&every(300_000, 288 * 8));
    assert_eq!((five.season, five.rows_per_day), (Some(288), Some(288)));
    // Months: first days of 2017 and 2018 (gaps of 28–31 days).
    let months: Vec<i64> = (0..24)
        .map(|i| chrono::NaiveDate::from_ymd_opt(2017 + i / 12, (i % 12 + 1) as u32, 1).unwrap())
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis())
        .collect();
    assert_eq!((detect(&months).frequency, detect(&months).season), (Frequency::Monthly, Some(12)));
    // Gaps of 7 s, 13 s, 7 s, …: irregular, no season.
    let odd: Vec<i64> = (0..50).map(|i| MON + (i / 2) * 20_000 + (i % 2) * 7_000).collect();
    assert_eq!((detect(&odd).frequency, detect(&odd).season), (Frequency::Irregular, None));
    assert_eq!(detect(&[MON]).frequency, Frequency::Irregular);
}

fn records(lines: &str) -> Vec<Map<String, Value>> {
    lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn time_column_choice() {
    // The bikeshare file's shape: `date` repeats for every hour, `ts` does not.
    let r = records(
        "{\"date\":\"2010-09-20\",\"ts\":\"2010-09-20 12:00:00\",\"count\":11}\n{\"date\":\"2010-09-20\",\"ts\":\"2010-09-20 13:00:00\",\"count\":13}",
    );
    assert_eq!(find_time_column(&r), Some(TimeSource::Column("ts".into())));
    // Prophet's `ds`, any case; a numeric `DAY_of_week` is not a time.
    let r = records("{\"DS\":\"2020-01-01\",\"y\":1,\"day_of_week\":3}\n{\"DS\":\"2020-01-02\",\"y\":2,\"day_of_week\":4}");
    assert_eq!(find_time_column(&r), Some(TimeSource::Column("DS".into())));
    // Epoch milliseconds under `timestamp` count; numbers under `date` do not.
    let r = records("{\"timestamp\":1483308000000,\"date\":20170101,\"v\":1}\n{\"timestamp\":1483311600000,\"date\":20170101,\"v\":2}");
    assert_eq!(find_time_column(&r), Some(TimeSource::Column("timestamp".into())));
    // The births file: a date in three columns (and an hour when there is one).
    let r = records("{\"year\":2000,\"month\":1,\"date_of_month\":1,\"day_of_week\":6,\"births\":9083}");
    assert_eq!(find_time_column(&r), Some(TimeSource::Template("{year}-{month}-{date_of_month}".into())));
    let r = records("{\"Year\":2000,\"Month\":1,\"Day\":1,\"Hour\":5,\"v\":1}");
    assert_eq!(find_time_column(&r), Some(TimeSource::Template("{Year}-{Month}-{Day} {Hour}:00:00".into())));
    assert_eq!(find_time_column(&records("{\"a\":1,\"b\":\"x\"}")), None);
}

fn config(dir: &Path, series: &str) -> PipelineConfig {
    let text = format!(
        "name = \"t\"\n[source]\ntopic = \"in\"\nschema = \"{}\"\nkey = \"series\"\ntime = \"time\"\n{series}\n[model]\nfeatures = []\ntarget = \"value\"\nhorizon = 1\n[sink]\ntopic = \"out\"\ndead_letter_topic = \"dlq\"\n",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/series.json").display()
    );
    let mut c = PipelineConfig::parse(&text).unwrap().value;
    c.base_dir = dir.to_path_buf();
    c
}

/// `apply` maps the chosen columns, and fills SQL, features and season; a file
/// whose times run backwards, a column it lacks or an ambiguous value column
/// are problems with their keys.
#[test]
fn apply_fills_the_pipeline_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.csv");
    let rows: String = (0..30).map(|i| format!("2017-01-{:02},{}\n", i + 1, 10 + i)).collect();
    std::fs::write(&file, format!("Date,Sales\n{rows}")).unwrap();
    let opts = SeriesOptions { input: Some(file.clone()), ..Default::default() };
    let mut c = config(dir.path(), "[series]");
    let plan = apply(&mut c, &opts).unwrap().unwrap();
    // The only numeric column is the value; January 2017 has weekends: daily.
    assert_eq!((plan.column.as_deref(), plan.time_column.as_deref()), (Some("Sales"), Some("Date")));
    assert_eq!((plan.detected.frequency, c.model.season), (Frequency::Daily, Some(7)));
    assert_eq!(c.source.file.rename.get("Sales").map(String::as_str), Some("value"));
    assert_eq!(c.source.file.rename.get("Date").map(String::as_str), Some("time"));
    assert_eq!(c.source.file.fill.get("series").map(String::as_str), Some("{file_stem}"));
    assert_eq!(c.features.table, TABLE);
    // The longest look-back is the 28-row mean; the default 64 already covers it.
    assert_eq!(c.features.lookback_rows, 64);
    assert_eq!(c.model.features, generate(Frequency::Daily, Some(7), "series", "time", "value").features);
    // A frequency given by name wins over the timestamps.
    let mut c = config(dir.path(), "[series]\nfrequency = \"business_daily\"");
    assert_eq!(apply(&mut c, &opts).unwrap().unwrap().detected.frequency, Frequency::BusinessDaily);
    assert_eq!(c.model.season, Some(5));

    let at = |c: &mut PipelineConfig, o: &SeriesOptions| -> Vec<String> {
        apply(c, o).unwrap_err().iter().map(|p| format!("{}: {}", p.at, p.message)).collect()
    };
    let missing = at(&mut config(dir.path(), "[series]\ncolumn = \"Close\""), &opts);
    assert!(missing.len() == 1 && missing[0].starts_with("series.column") && missing[0].contains("Sales"), "{missing:?}");
    let two = dir.path().join("two.csv");
    std::fs::write(&two, "time,a,b\n2017-01-01,1,2\n2017-01-02,3,4\n2017-01-03,5,6\n").unwrap();
    let o = SeriesOptions { input: Some(two), ..Default::default() };
    let ambiguous = at(&mut config(dir.path(), "[series]"), &o);
    assert!(ambiguous[0].starts_with("series.column: give --column") && ambiguous[0].contains("a, b"), "{ambiguous:?}");
    let back = dir.path().join("back.csv");
    std::fs::write(&back, "Date,v\n2017-01-03,1\n2017-01-02,2\n2017-01-01,3\n").unwrap();
    let o = SeriesOptions { input: Some(back), ..Default::default() };
    let backwards = at(&mut config(dir.path(), "[series]"), &o);
    assert!(backwards[0].starts_with("series.time_column") && backwards[0].contains("backwards"), "{backwards:?}");
    // Own SQL with [series]: its feature columns must be listed.
    let own = at(&mut config(dir.path(), "[series]\n[features]\nsql = \"SELECT _offset, series, time, value FROM points\""), &opts);
    assert!(own.len() == 1 && own[0].starts_with("model.features"), "{own:?}");
    // No file (real brokers, no sample): a named frequency is enough; auto is not.
    let mut c = config(dir.path(), "[series]\nfrequency = \"hourly\"");
    let plan = apply(&mut c, &SeriesOptions::default()).unwrap().unwrap();
    assert_eq!((plan.file, plan.column, c.model.season), (None, None, Some(24)));
    let auto = at(&mut config(dir.path(), "[series]"), &SeriesOptions::default());
    assert!(auto.len() == 1 && auto[0].starts_with("series.frequency"), "{auto:?}");
    // --column on a pipeline without [series].
    let no = at(&mut config(dir.path(), "[features]\nsql = \"SELECT 1\""), &SeriesOptions { column: Some("x".into()), ..Default::default() });
    assert!(no[0].starts_with("series:"), "{no:?}");
}

#[test]
fn frequency_names() {
    assert_eq!(Frequency::parse("auto"), Ok(None));
    assert_eq!(Frequency::parse("business-daily"), Ok(Some(Frequency::BusinessDaily)));
    assert_eq!(Frequency::parse("15m"), Ok(Some(Frequency::SubDaily { step_ms: 900_000 })));
    assert!(Frequency::parse("fortnightly").is_err());
    assert!(Frequency::parse("2d").is_err());
    assert_eq!(Detected::nominal(Frequency::SubDaily { step_ms: HOUR_MS }).season, Some(24));
    assert_eq!(Detected::nominal(Frequency::Yearly).season, None);
}

#[test]
fn lags_and_means() {
    assert_eq!(lags(Some(24)), [1, 2, 23, 24, 47]);
    assert_eq!(lags(Some(7)), [1, 2, 6, 7, 13]);
    assert_eq!(lags(Some(5)), [1, 2, 4, 5, 9]);
    assert_eq!(lags(Some(2)), [1, 2, 3]);
    assert_eq!(lags(Some(52)), [1, 2, 51, 52]);
    assert_eq!(lags(None), [1, 2, 3]);
    assert_eq!(means(Some(24)), [24, 96]);
    assert_eq!(means(Some(96)), [96]);
}

/// Builds a one-key batch of (time, value) rows in the series schema.
fn batch(rows: &[(i64, f64)]) -> arrow::record_batch::RecordBatch {
    let schema = std::sync::Arc::new(
        crate::source::schema::TopicSchema::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/series.json")).unwrap(),
    );
    let mut d = crate::source::decode::Decoder::new(schema);
    for (i, (t, v)) in rows.iter().enumerate() {
        let line = serde_json::json!({"series": "s", "time": crate::source::file::rfc3339_ms(*t), "value": v}).to_string();
        d.push(Some(line.as_bytes()), i as i64).unwrap();
    }
    d.finish()
}

fn column(b: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Option<f64>> {
    use arrow::array::{Array, AsArray};
    let c = arrow::compute::cast(b.column_by_name(name).unwrap(), &arrow::datatypes::DataType::Float64).unwrap();
    let c = c.as_primitive::<arrow::datatypes::Float64Type>();
    (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
}

/// The generated SQL plans against the series schema, and its columns hold what
/// they say, checked against values worked out here: on hourly rows from Monday
/// 00:00 with value = i², row i's d_lag23 is i² − (i−23)², d_mean24 is i² minus
/// the mean of the last 24 squares, and next_hHH is 1 exactly for HH = (i+1) mod 24.
#[tokio::test]
async fn hourly_sql_computes_what_it_says() {
    let g = generate(Frequency::SubDaily { step_ms: HOUR_MS }, Some(24), "series", "time", "value");
    assert_eq!(g.lookback_rows, 96);
    assert_eq!(g.features.len(), 1 + 5 + 2 + 23);
    let rows: Vec<(i64, f64)> = (0..60).map(|i| (MON + i * HOUR_MS, (i * i) as f64)).collect();
    let b = batch(&rows);
    let e = crate::features::FeatureEngine::plan(&g.sql, TABLE, b.schema()).await.unwrap();
    let out = e.compute(None, &b).await.unwrap();
    assert_eq!(out.num_rows(), 60);
    let sq = |i: i64| (i * i) as f64;
    let (l23, l47, m24, m96) = (column(&out, "d_lag23"), column(&out, "d_lag47"), column(&out, "d_mean24"), column(&out, "d_mean96"));
    for i in 0..60i64 {
        let iu = i as usize;
        assert_eq!(l23[iu], (i >= 23).then(|| sq(i) - sq(i - 23)), "row {i}");
        assert_eq!(l47[iu], (i >= 47).then(|| sq(i) - sq(i - 47)), "row {i}");
        let last = |n: i64| (i.saturating_sub(n - 1).max(0)..=i).map(sq).collect::<Vec<_>>();
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        assert!((m24[iu].unwrap() - (sq(i) - mean(last(24)))).abs() < 1e-9, "row {i}");
        assert!((m96[iu].unwrap() - (sq(i) - mean(last(96)))).abs() < 1e-9, "row {i}");
        for h in 1..24 {
            let want = if (i + 1) % 24 == h { 1.0 } else { 0.0 };
            assert_eq!(column(&out, &format!("next_h{h:02}"))[iu], Some(want), "row {i} hour {h}");
        }
    }
}

/// Every frequency's SQL plans and runs; monthly and weekly rows point at the
/// month of the next row: rows of 2017-01-01, -21 and -28 plus a month are all in
/// February; plus 7 days they are January 8 and 28 (January: the dropped level)
/// and February 4.
#[tokio::test]
async fn every_frequency_plans() {
    let jan = |d: i64| MON + (d - 2) * DAY_MS;
    let rows: Vec<(i64, f64)> = [1, 21, 28].iter().map(|d| (jan(*d), 1.0)).collect();
    let b = batch(&rows);
    for f in [
        Frequency::SubDaily { step_ms: 900_000 },
        Frequency::SubDaily { step_ms: 6 * HOUR_MS },
        Frequency::SubDaily { step_ms: 60_000 },
        Frequency::Daily,
        Frequency::BusinessDaily,
        Frequency::Weekly,
        Frequency::Monthly,
        Frequency::Quarterly,
        Frequency::Yearly,
        Frequency::Irregular,
    ] {
        let g = generate(f, f.nominal_season(), "series", "time", "value");
        let e = crate::features::FeatureEngine::plan(&g.sql, TABLE, b.schema()).await.unwrap_or_else(|e| panic!("{f}: {e}"));
        let out = e.compute(None, &b).await.unwrap();
        assert_eq!(out.num_columns(), 3 + g.features.len(), "{f}");
        match f {
            Frequency::Monthly => assert_eq!(column(&out, "next_feb"), [Some(1.0), Some(1.0), Some(1.0)]),
            Frequency::Weekly => assert_eq!(column(&out, "next_feb"), [Some(0.0), Some(0.0), Some(1.0)]),
            _ => {}
        }
    }
}

/// Weekday one-hots of the next (business) day: rows Mon 2017-01-02 … Sun
/// 2017-01-08. Daily: the row of day d points at d + 1 (Sunday's at Monday, the
/// dropped level: all zero). Business-daily: Friday, Saturday and Sunday point at
/// Monday (all zero), Monday–Thursday at the next day.
#[tokio::test]
async fn weekday_sql() {
    let rows: Vec<(i64, f64)> = (0..7).map(|i| (MON + i * DAY_MS, 1.0)).collect();
    let b = batch(&rows);
    let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    for (f, levels) in [(Frequency::Daily, &names[1..]), (Frequency::BusinessDaily, &names[1..5])] {
        let g = generate(f, f.nominal_season(), "series", "time", "value");
        let e = crate::features::FeatureEngine::plan(&g.sql, TABLE, b.schema()).await.unwrap();
        let out = e.compute(None, &b).await.unwrap();
        for day in 0..7 {
            let target = match f {
                Frequency::Daily => (day + 1) % 7,
                _ if day < 4 => day + 1,
                _ => 0,
            };
            for l in levels.iter() {
                let level = names.iter().position(|n| n == l).unwrap();
                let want = if level == target { 1.0 } else { 0.0 };
                assert_eq!(column(&out, &format!("next_{l}"))[day], Some(want), "{f} row {} level {l}", names[day]);
            }
        }
    }
}
