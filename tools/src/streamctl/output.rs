//! Printing what the admin commands answer: pretty JSON or aligned tables.

use quiver_tools::outln;

use crate::CliResult;

pub fn print_json(v: &impl serde::Serialize) -> CliResult {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    outln!("{s}");
    Ok(())
}

pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    // A row with more or fewer cells than headers shifts every column after the gap (it once
    // did: `cluster describe` printed roles under SHARDS); the tests run debug builds.
    debug_assert!(
        rows.iter().all(|r| r.len() == headers.len()),
        "a table row's cells do not match its headers {headers:?}"
    );
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
