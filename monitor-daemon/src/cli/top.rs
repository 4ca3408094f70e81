//! `leakmon top`: a live terminal view of the daemon's processes, sorted by growth and updated
//! in place (for a suspect, which class of its memory grows), with keys to change the sort, start
//! a trace and read the latest report. It owns the
//! terminal session (restored on exit and on panic), the view's state, its key bindings and its
//! rendering; the data comes from the daemon's API through [`Client`].

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use crate::cli::client::{Client, ClientError, ReportFormat, TraceStarted};
use crate::cli::oncall::{forecast_text, human_count_rate, human_duration};
use crate::model::{Method, ProcessView};
use crate::report::text::{human_bytes, human_rate, human_rate_per_minute};

/// Length of the trace the `t` key starts.
pub const TRACE_DURATION: Duration = Duration::from_secs(60);
/// How long connecting to the daemon may take before the view reports it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one read from the daemon may block the view.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Lines one PageUp/PageDown scrolls the report.
const PAGE: u16 = 10;

/// Why `leakmon top` stopped with an error (network errors only show in its status line).
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The terminal could not be set up, read or drawn.
    #[error("cannot drive the terminal: {0}")]
    Terminal(#[from] io::Error),
}

/// Runs the live view against the daemon `client` talks to, refreshing every `interval`, until
/// the user quits.
pub fn run(client: &Client, interval: Duration) -> Result<(), TopError> {
    let client = client.clone().with_timeouts(CONNECT_TIMEOUT, READ_TIMEOUT);
    let mut terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
    let _restore = RestoreOnDrop;
    let mut app = App::new(client.addr(), interval);
    let mut next_refresh = Instant::now();
    loop {
        if Instant::now() >= next_refresh {
            app.refreshed(client.processes());
            next_refresh = Instant::now() + interval;
        }
        terminal.draw(|frame| app.draw(frame))?;
        if !event::poll(next_refresh.saturating_duration_since(Instant::now()))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        match app.on_key(key) {
            Action::None => {}
            Action::Quit => return Ok(()),
            Action::Trace(pid) => app.trace_started(pid, client.start_trace(pid, TRACE_DURATION)),
            Action::Report(pid) => {
                app.report_fetched(pid, client.report(pid, ReportFormat::Text, None))
            }
        }
    }
}

/// Leaves raw mode and the alternate screen when dropped (`ratatui::try_init` also installs a
/// panic hook that does the same).
#[derive(Debug)]
struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The column the table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    /// RSS growth, fastest first.
    RssGrowth,
    /// RSS, largest first.
    Rss,
    /// VSZ, largest first.
    Vsz,
    /// Open-fd growth, fastest first.
    FdGrowth,
    /// Open fds, most first.
    Fds,
    /// Time until exhaustion, soonest first.
    Forecast,
    /// Threads, most first.
    Threads,
    /// Process id, ascending.
    Pid,
}

impl SortColumn {
    /// The column `s` switches to.
    pub fn next(self) -> Self {
        match self {
            Self::RssGrowth => Self::Rss,
            Self::Rss => Self::Vsz,
            Self::Vsz => Self::FdGrowth,
            Self::FdGrowth => Self::Fds,
            Self::Fds => Self::Threads,
            Self::Threads => Self::Forecast,
            Self::Forecast => Self::Pid,
            Self::Pid => Self::RssGrowth,
        }
    }

    /// Its index in [`COLUMNS`].
    fn column(self) -> usize {
        match self {
            Self::Pid => 0,
            Self::Rss => 3,
            Self::RssGrowth => 4,
            Self::Vsz => 5,
            Self::Fds => 6,
            Self::FdGrowth => 7,
            Self::Threads => 8,
            Self::Forecast => 11,
        }
    }
}

/// The table's column titles (GROWS: the class of a suspect's memory that grows fastest).
pub const COLUMNS: [&str; 13] = [
    "PID", "COMM", "UNIT", "RSS", "RSS/s", "VSZ", "FDS", "FDS/s", "THR", "SUSPECT", "GROWS",
    "FORECAST", "TRACED",
];

/// Sorts `processes` by `column`, ties by pid.
pub fn sort_processes(processes: &mut [ProcessView], column: SortColumn) {
    processes.sort_by(|a, b| {
        let order = match column {
            SortColumn::RssGrowth => b
                .rss_growth_bytes_per_second
                .total_cmp(&a.rss_growth_bytes_per_second),
            SortColumn::Rss => b.rss_bytes.cmp(&a.rss_bytes),
            SortColumn::Vsz => b.vsz_bytes.cmp(&a.vsz_bytes),
            SortColumn::FdGrowth => b.fd_growth_per_second.total_cmp(&a.fd_growth_per_second),
            SortColumn::Fds => b.open_fds.cmp(&a.open_fds),
            SortColumn::Threads => b.threads.cmp(&a.threads),
            SortColumn::Forecast => {
                let key = |p: &ProcessView| p.seconds_until_exhaustion.unwrap_or(f64::INFINITY);
                key(a).total_cmp(&key(b))
            }
            SortColumn::Pid => a.pid.cmp(&b.pid),
        };
        order.then(a.pid.cmp(&b.pid))
    });
}

/// The cells of one process's row, in [`COLUMNS`] order.
pub fn row_cells(process: &ProcessView) -> [String; 13] {
    let suspect = if process.suspected {
        process
            .reasons
            .iter()
            .map(|reason| reason.as_str())
            .collect::<Vec<_>>()
            .join(",")
    } else {
        String::new()
    };
    // How it is traced (pf: page faults, alloc: allocations), with what the trace holds.
    let method = match process.trace_method {
        Some(Method::PageFaults) => "pf ",
        Some(Method::Allocations) => "alloc ",
        None => "",
    };
    let traced = match (process.traced, process.outstanding_bytes) {
        (true, Some(bytes)) => format!("{method}{}", human_bytes(bytes)),
        (true, None) => format!("{method}yes"),
        (false, _) => String::new(),
    };
    [
        process.pid.to_string(),
        process.comm.clone(),
        process.unit.clone().unwrap_or_else(|| "-".to_owned()),
        human_bytes(process.rss_bytes),
        human_rate(process.rss_growth_bytes_per_second),
        human_bytes(process.vsz_bytes),
        process.open_fds.to_string(),
        human_count_rate(process.fd_growth_per_second),
        process.threads.to_string(),
        suspect,
        growing_class(process),
        forecast_text(process.seconds_until_exhaustion),
        traced,
    ]
}

/// The class of a suspect's memory that grows fastest, with its growth (`heap +1.2 MiB/min`).
fn growing_class(process: &ProcessView) -> String {
    let Some((name, class)) = process
        .memory
        .as_ref()
        .and_then(|memory| memory.fastest_growing())
    else {
        return String::new();
    };
    let short = match name {
        "anon_mappings" => "anon",
        "thread_stacks" => "stacks",
        other => other,
    };
    format!(
        "{short} {}",
        human_rate_per_minute(class.growth_bytes_per_second)
    )
}

/// What a key asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond the view's own state.
    None,
    /// Leave.
    Quit,
    /// Start a trace of this process.
    Trace(u32),
    /// Fetch this process's latest text report.
    Report(u32),
}

/// The report pane.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReportPane {
    pid: u32,
    text: String,
    scroll: u16,
}

impl ReportPane {
    fn scroll_by(&mut self, lines: i32) {
        let last = self.text.lines().count().saturating_sub(1);
        let last = u16::try_from(last).unwrap_or(u16::MAX);
        let target = i32::from(self.scroll) + lines;
        self.scroll = u16::try_from(target.max(0)).unwrap_or(u16::MAX).min(last);
    }
}

/// The state of the view.
#[derive(Debug, Clone)]
pub struct App {
    addr: SocketAddr,
    interval: Duration,
    processes: Vec<ProcessView>,
    sort: SortColumn,
    selected: usize,
    status: Status,
    report: Option<ReportPane>,
}

/// The status line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// Before the first answer.
    Connecting,
    /// The outcome of the last action (kept across refreshes).
    Info(String),
    /// The last failure (cleared by the next successful refresh).
    Error(String),
}

impl App {
    /// An empty view of the daemon at `addr`, refreshed every `interval`.
    pub fn new(addr: SocketAddr, interval: Duration) -> Self {
        Self {
            addr,
            interval,
            processes: Vec::new(),
            sort: SortColumn::RssGrowth,
            selected: 0,
            status: Status::Connecting,
            report: None,
        }
    }

    /// Takes the answer to a refresh: new rows (sorted, the selection following its process),
    /// or the error in the status line with the last rows kept.
    pub fn refreshed(&mut self, answer: Result<Vec<ProcessView>, ClientError>) {
        match answer {
            Ok(processes) => {
                let selected_pid = self.selected_process().map(|p| p.pid);
                self.processes = processes;
                sort_processes(&mut self.processes, self.sort);
                self.follow(selected_pid);
                if matches!(self.status, Status::Connecting | Status::Error(_)) {
                    self.status = Status::Info(String::new());
                }
            }
            Err(error) => self.status = Status::Error(error.to_string()),
        }
    }

    /// Takes the answer to a `t`.
    pub fn trace_started(&mut self, pid: u32, answer: Result<TraceStarted, ClientError>) {
        self.status = match answer {
            Ok(started) => Status::Info(format!(
                "tracing pid {} by its {} for {}; press r for its report when it ends",
                started.pid,
                started.method.looks_at(),
                human_duration(started.duration_seconds)
            )),
            Err(error) => Status::Error(format!("cannot trace pid {pid}: {error}")),
        };
    }

    /// Takes the answer to an `r`: the report opens in the pane.
    pub fn report_fetched(&mut self, pid: u32, answer: Result<Vec<u8>, ClientError>) {
        match answer {
            Ok(bytes) => {
                self.report = Some(ReportPane {
                    pid,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    scroll: 0,
                });
                self.status = Status::Info(String::new());
            }
            Err(error) => {
                self.status = Status::Error(format!("no report for pid {pid}: {error}"));
            }
        }
    }

    /// Applies `key`; returns what the loop must do.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match (key.code, self.report.as_mut()) {
            (KeyCode::Char('q'), _) => Action::Quit,
            (KeyCode::Char('c'), _) if ctrl => Action::Quit,
            (KeyCode::Esc | KeyCode::Char('r'), Some(_)) => {
                self.report = None;
                Action::None
            }
            (KeyCode::Esc, None) => Action::Quit,
            (KeyCode::Down | KeyCode::Char('j'), Some(pane)) => {
                pane.scroll_by(1);
                Action::None
            }
            (KeyCode::Up | KeyCode::Char('k'), Some(pane)) => {
                pane.scroll_by(-1);
                Action::None
            }
            (KeyCode::PageDown | KeyCode::Char(' '), Some(pane)) => {
                pane.scroll_by(i32::from(PAGE));
                Action::None
            }
            (KeyCode::PageUp, Some(pane)) => {
                pane.scroll_by(-i32::from(PAGE));
                Action::None
            }
            (KeyCode::Down | KeyCode::Char('j'), None) => {
                self.selected = (self.selected + 1).min(self.processes.len().saturating_sub(1));
                Action::None
            }
            (KeyCode::Up | KeyCode::Char('k'), None) => {
                self.selected = self.selected.saturating_sub(1);
                Action::None
            }
            (KeyCode::Home, None) => {
                self.selected = 0;
                Action::None
            }
            (KeyCode::End, None) => {
                self.selected = self.processes.len().saturating_sub(1);
                Action::None
            }
            (KeyCode::Char('s'), _) => {
                let selected_pid = self.selected_process().map(|p| p.pid);
                self.sort = self.sort.next();
                sort_processes(&mut self.processes, self.sort);
                self.follow(selected_pid);
                Action::None
            }
            (KeyCode::Char('t'), _) => self
                .selected_process()
                .map_or(Action::None, |p| Action::Trace(p.pid)),
            (KeyCode::Char('r'), None) => self
                .selected_process()
                .map_or(Action::None, |p| Action::Report(p.pid)),
            _ => Action::None,
        }
    }

    fn selected_process(&self) -> Option<&ProcessView> {
        self.processes.get(self.selected)
    }

    /// Selects `pid` again when it is still listed, else keeps the position within bounds.
    fn follow(&mut self, pid: Option<u32>) {
        let found = pid.and_then(|pid| self.processes.iter().position(|p| p.pid == pid));
        self.selected = found.unwrap_or(self.selected);
        self.selected = self.selected.min(self.processes.len().saturating_sub(1));
    }

    /// Draws the whole view into `frame`.
    pub fn draw(&self, frame: &mut Frame) {
        let [header, body, status] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(self.header_lines()), header);
        match &self.report {
            Some(pane) => {
                let [table, report] =
                    Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)])
                        .areas(body);
                self.draw_table(frame, table);
                self.draw_report(frame, report, pane);
            }
            None => self.draw_table(frame, body),
        }
        let line = match &self.status {
            Status::Connecting => Line::from(format!("connecting to {}...", self.addr)),
            Status::Info(text) => Line::from(text.as_str()),
            Status::Error(text) => Line::styled(text.as_str(), Style::new().fg(Color::Red)),
        };
        frame.render_widget(Paragraph::new(line), status);
    }

    fn header_lines(&self) -> Vec<Line<'_>> {
        let suspected = self.processes.iter().filter(|p| p.suspected).count();
        let traced = self.processes.iter().filter(|p| p.traced).count();
        let sort = COLUMNS[self.sort.column()];
        vec![
            Line::from(vec![
                Span::styled("leakmon top", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(format!(
                    "  daemon {}  {} processes, {suspected} suspected, {traced} traced  \
                     sorted by {sort}, every {}",
                    self.addr,
                    self.processes.len(),
                    human_duration(self.interval.as_secs_f64()),
                )),
            ]),
            Line::styled(
                "q quit  ↑↓/jk select  s sort  t trace 60 s  r report",
                Style::new().fg(Color::DarkGray),
            ),
        ]
    }

    fn draw_table(&self, frame: &mut Frame, area: Rect) {
        let sorted = self.sort.column();
        let header = Row::new(COLUMNS.iter().enumerate().map(|(index, title)| {
            if index == sorted {
                Cell::from(format!("{title}*"))
                    .style(Style::new().add_modifier(Modifier::UNDERLINED))
            } else {
                Cell::from(*title)
            }
        }))
        .style(Style::new().add_modifier(Modifier::BOLD));
        let rows = self.processes.iter().map(|process| {
            let row = Row::new(row_cells(process));
            if process.suspected {
                row.style(Style::new().fg(Color::Red))
            } else {
                row
            }
        });
        let widths = [
            Constraint::Length(7),
            Constraint::Length(15),
            Constraint::Min(8),
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(11),
            Constraint::Length(20),
            Constraint::Length(9),
            Constraint::Length(9),
        ];
        let table = Table::new(rows, widths)
            .header(header)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default();
        if !self.processes.is_empty() {
            state.select(Some(self.selected));
        }
        frame.render_stateful_widget(table, area, &mut state);
    }

    fn draw_report(&self, frame: &mut Frame, area: Rect, pane: &ReportPane) {
        let comm = self
            .processes
            .iter()
            .find(|p| p.pid == pane.pid)
            .map(|p| format!(" ({})", p.comm))
            .unwrap_or_default();
        let block = Block::default().borders(Borders::ALL).title(format!(
            " report for pid {}{comm}: ↑↓ PgUp PgDn scroll, Esc close ",
            pane.pid
        ));
        let report = Paragraph::new(pane.text.as_str())
            .block(block)
            .scroll((pane.scroll, 0));
        frame.render_widget(report, area);
    }
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::model::{Memory, MemoryClass, Reason};

    fn process(pid: u32, comm: &str, rss: u64, growth: f64) -> ProcessView {
        ProcessView {
            rss_bytes: rss,
            vsz_bytes: rss * 4,
            open_fds: u64::from(pid),
            rss_growth_bytes_per_second: growth,
            ..crate::testing::process_view(pid, comm)
        }
    }

    fn processes() -> Vec<ProcessView> {
        let mut leaky = process(4242, "leaky-app", 300 * 1024 * 1024, 2048.0);
        leaky.unit = Some("leaky.service".to_owned());
        leaky.suspected = true;
        leaky.reasons = vec![Reason::Rss, Reason::Fds];
        leaky.seconds_until_exhaustion = Some(3.0 * 3600.0 + 600.0);
        leaky.fd_growth_per_second = 0.25;
        leaky.traced = true;
        leaky.trace_method = Some(Method::PageFaults);
        leaky.outstanding_bytes = Some(5 * 1024 * 1024);
        leaky.threads = 40;
        leaky.memory = Some(Memory {
            heap: MemoryClass {
                resident_bytes: 200 << 20,
                growth_bytes_per_second: 2048.0,
            },
            thread_stacks: MemoryClass {
                resident_bytes: 1 << 20,
                growth_bytes_per_second: 100.0,
            },
            ..Memory::default()
        });
        let mut soon = process(7, "postgres", 1024 * 1024 * 1024, 10.0);
        soon.seconds_until_exhaustion = Some(120.0);
        vec![
            process(1, "systemd", 12 * 1024 * 1024, 0.0),
            soon,
            leaky,
            process(300, "sshd", 8 * 1024 * 1024, -5.0),
        ]
    }

    fn pids(processes: &[ProcessView]) -> Vec<u32> {
        processes.iter().map(|p| p.pid).collect()
    }

    fn app() -> App {
        let mut app = App::new(
            SocketAddr::from(([127, 0, 0, 1], 9464)),
            Duration::from_secs(2),
        );
        app.refreshed(Ok(processes()));
        app
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| app.draw(frame)).unwrap();
        let buffer = terminal.backend().buffer();
        buffer
            .content()
            .chunks(usize::from(width))
            .map(|row| row.iter().map(|cell| cell.symbol()).collect())
            .collect()
    }

    #[test]
    fn sorts_by_each_column() {
        let mut list = processes();
        sort_processes(&mut list, SortColumn::RssGrowth);
        assert_eq!(pids(&list), [4242, 7, 1, 300]);
        sort_processes(&mut list, SortColumn::Rss);
        assert_eq!(pids(&list), [7, 4242, 1, 300]);
        sort_processes(&mut list, SortColumn::Fds);
        assert_eq!(pids(&list), [4242, 300, 7, 1]);
        sort_processes(&mut list, SortColumn::Forecast);
        assert_eq!(pids(&list), [7, 4242, 1, 300]);
        sort_processes(&mut list, SortColumn::FdGrowth);
        assert_eq!(pids(&list), [4242, 1, 7, 300]);
        sort_processes(&mut list, SortColumn::Threads);
        assert_eq!(pids(&list), [4242, 1, 7, 300]);
        sort_processes(&mut list, SortColumn::Pid);
        assert_eq!(pids(&list), [1, 7, 300, 4242]);
        let mut column = SortColumn::RssGrowth;
        for _ in 0..8 {
            column = column.next();
        }
        assert_eq!(column, SortColumn::RssGrowth);
    }

    #[test]
    fn formats_rows() {
        let list = processes();
        assert_eq!(
            row_cells(&list[2]),
            [
                "4242",
                "leaky-app",
                "leaky.service",
                "300.0 MiB",
                "+2.0 KiB/s",
                "1.2 GiB",
                "4242",
                "+0.25/s",
                "40",
                "rss,fds",
                "heap +120.0 KiB/min",
                "3h 10m",
                "pf 5.0 MiB",
            ]
        );
        assert_eq!(
            row_cells(&list[0]),
            [
                "1", "systemd", "-", "12.0 MiB", "0 B/s", "48.0 MiB", "1", "0/s", "1", "", "", "-",
                "",
            ]
        );
    }

    #[test]
    fn renders_header_and_rows() {
        let lines = screen(&app(), 160, 12);
        assert!(lines[0].contains("leakmon top"), "{lines:#?}");
        assert!(lines[0].contains("daemon 127.0.0.1:9464"), "{lines:#?}");
        assert!(
            lines[0].contains("4 processes, 1 suspected, 1 traced"),
            "{lines:#?}"
        );
        assert!(
            lines[0].contains("sorted by RSS/s, every 2 s"),
            "{lines:#?}"
        );
        assert!(
            lines[2].contains("PID") && lines[2].contains("RSS/s*"),
            "{lines:#?}"
        );
        let order: Vec<usize> = ["leaky-app", "postgres", "systemd", "sshd"]
            .iter()
            .map(|name| lines.iter().position(|line| line.contains(name)).unwrap())
            .collect();
        assert_eq!(order, [3, 4, 5, 6], "{lines:#?}");
        assert!(lines[3].contains("rss,fds"), "{lines:#?}");
        assert!(lines[3].contains("heap +120.0 KiB/min"), "{lines:#?}");
    }

    #[test]
    fn keys_select_sort_trace_and_quit() {
        let mut app = app();
        assert_eq!(app.on_key(key(KeyCode::Char('t'))), Action::Trace(4242));
        assert_eq!(app.on_key(key(KeyCode::Down)), Action::None);
        assert_eq!(app.on_key(key(KeyCode::Char('j'))), Action::None);
        assert_eq!(app.on_key(key(KeyCode::Char('r'))), Action::Report(1));
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(app.sort, SortColumn::Rss);
        assert_eq!(app.on_key(key(KeyCode::Char('t'))), Action::Trace(1));
        app.on_key(key(KeyCode::Up));
        assert_eq!(app.on_key(key(KeyCode::Char('t'))), Action::Trace(4242));
        for _ in 0..10 {
            app.on_key(key(KeyCode::Char('k')));
        }
        assert_eq!(app.on_key(key(KeyCode::Char('t'))), Action::Trace(7));
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Quit);
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    #[test]
    fn refresh_keeps_the_selection_and_shows_errors() {
        let mut app = app();
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected_process().map(|p| p.pid), Some(7));
        let mut changed = processes();
        changed[1].rss_growth_bytes_per_second = 1e9;
        app.refreshed(Ok(changed));
        assert_eq!(app.selected, 0);
        assert_eq!(app.selected_process().map(|p| p.pid), Some(7));
        app.refreshed(Err(ClientError::Api {
            status: 500,
            message: "the watcher stopped".to_owned(),
        }));
        assert_eq!(app.processes.len(), 4);
        let lines = screen(&app, 160, 12);
        assert!(lines[11].starts_with("the watcher stopped"), "{lines:#?}");
        app.refreshed(Ok(Vec::new()));
        assert_eq!(app.selected, 0);
        assert_eq!(app.on_key(key(KeyCode::Char('t'))), Action::None);
        assert_eq!(app.status, Status::Info(String::new()));
    }

    #[test]
    fn report_pane_scrolls_and_closes() {
        let mut app = app();
        let text: String = (1..=30).map(|n| format!("report line {n}\n")).collect();
        app.report_fetched(4242, Ok(text.into_bytes()));
        let lines = screen(&app, 130, 24);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("report for pid 4242 (leaky-app)")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("report line 1 ")),
            "{lines:#?}"
        );
        app.on_key(key(KeyCode::PageDown));
        app.on_key(key(KeyCode::Char('j')));
        let lines = screen(&app, 130, 24);
        assert!(
            lines.iter().any(|l| l.contains("report line 12 ")),
            "{lines:#?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("report line 1 ")),
            "{lines:#?}"
        );
        for _ in 0..10 {
            app.on_key(key(KeyCode::PageDown));
        }
        assert_eq!(app.report.as_ref().map(|pane| pane.scroll), Some(29));
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::None);
        assert_eq!(app.report, None);
        app.report_fetched(
            1,
            Err(ClientError::Api {
                status: 404,
                message: "no report yet".to_owned(),
            }),
        );
        assert_eq!(app.report, None);
        assert_eq!(
            app.status,
            Status::Error("no report for pid 1: no report yet".to_owned())
        );
    }
}
