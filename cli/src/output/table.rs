//! Columns padded to their widest cell, as kubectl's tabwriter lays them out: `get`'s
//! tables three spaces apart, the tables inside `describe` and `trace` indented by two
//! and two apart. Owns the layout only, not what the rows say.

/// A table's layout: how far it is indented, what stands between columns, which columns
/// align right, and how wide each column is so far.
pub struct Table {
    indent: &'static str,
    gap: &'static str,
    right: Vec<usize>,
    widths: Vec<usize>,
}

impl Table {
    /// kubectl's `get` tables: no indent, three spaces between columns.
    pub fn new() -> Self {
        Table {
            indent: "",
            gap: "   ",
            right: Vec::new(),
            widths: Vec::new(),
        }
    }

    /// A table inside `describe` or `trace`: indented by two spaces, columns two apart.
    pub fn indented() -> Self {
        Table {
            indent: "  ",
            gap: "  ",
            ..Table::new()
        }
    }

    /// Aligns `column` (counted from 0) to the right, as times and durations are.
    pub fn right(mut self, column: usize) -> Self {
        self.right.push(column);
        self
    }

    /// Widens the columns to fit `row`. A table printed row by row (`get -w`) widens as
    /// it goes: a row never narrows the ones printed before it.
    pub fn fit(&mut self, row: &[String]) {
        self.widths.resize(row.len().max(self.widths.len()), 0);
        for (width, cell) in self.widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    /// `row` in the widths so far, without a newline; trailing spaces are dropped.
    pub fn line(&self, row: &[String]) -> String {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let w = self.widths.get(i).copied().unwrap_or(0);
                if self.right.contains(&i) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        format!("{}{}", self.indent, cells.join(self.gap).trim_end())
    }

    /// All of `rows`, each column as wide as its widest cell, a line each.
    pub fn render(mut self, rows: &[Vec<String>]) -> String {
        rows.iter().for_each(|row| self.fit(row));
        rows.iter().map(|row| self.line(row) + "\n").collect()
    }
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

/// Prints rows as kubectl's `get` does: left-aligned columns three spaces apart.
pub fn print(rows: &[Vec<String>]) {
    print!("{}", Table::new().render(rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn pads_columns_three_apart_and_drops_trailing_spaces() {
        let table = rows(&[&["NAME", "STATUS", "AGE"], &["web-ü", "Running", ""]]);
        assert_eq!(
            Table::new().render(&table),
            "NAME    STATUS    AGE\nweb-ü   Running\n"
        );
    }

    #[test]
    fn indented_with_right_aligned_columns() {
        let table = rows(&[&["Type", "At", "Message"], &["Normal", "+0.012s", "hi"]]);
        assert_eq!(
            Table::indented().right(1).render(&table),
            "  Type         At  Message\n  Normal  +0.012s  hi\n"
        );
    }

    #[test]
    fn row_by_row_widens_as_it_goes() {
        let mut table = Table::new();
        let mut lines = Vec::new();
        for row in rows(&[&["A", "B"], &["long", "x"]]) {
            table.fit(&row);
            lines.push(table.line(&row));
        }
        assert_eq!(lines, ["A   B", "long   x"]);
    }
}
