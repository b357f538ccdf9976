//! The status page's HTML. Every value from the gateway goes through
//! [`Esc`]; labels come from [`Label`] only.

use std::fmt::{self, Display, Write};

use liandong_core::pb;

use super::assets::REFRESH_SCRIPT;
use super::labels::{Label, Lang};
use super::{CERTIFICATE_WARNING_DAYS, PageData, REFRESH_SECONDS};
use crate::store::activity::PublishCounts;

/// Text escaped for HTML element content and quoted attribute values.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// `text` escaped for HTML.
pub fn escape(text: &str) -> String {
    Esc(text).to_string()
}

/// The page for `data` in `lang`.
pub fn page(data: &PageData, lang: Lang) -> String {
    let mut out = String::with_capacity(32 * 1024);
    // Writing to a String cannot fail.
    let _ = Page { data, lang }.write(&mut out);
    out
}

struct Page<'a> {
    data: &'a PageData,
    lang: Lang,
}

impl Page<'_> {
    fn t(&self, label: Label) -> Esc<'static> {
        Esc(label.text(self.lang))
    }

    /// A label with `{n}` replaced, escaped.
    fn tn(&self, label: Label, n: impl Display) -> String {
        escape(&label.text(self.lang).replace("{n}", &n.to_string()))
    }

    fn write(&self, out: &mut String) -> fmt::Result {
        let lang = self.lang;
        let other = lang.other();
        let version = escape(&self.data.status.version);
        write!(
            out,
            "<!doctype html>\n<html lang=\"{code}\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n\
             <link rel=\"icon\" type=\"image/svg+xml\" href=\"/assets/logo.svg?v={version}\">\n\
             <link rel=\"stylesheet\" href=\"/assets/style.css?v={version}\">\n</head>\n<body>\n",
            code = lang.code(),
            title = self.t(Label::Title),
        )?;
        write!(
            out,
            "<header class=\"top\">\n<img src=\"/assets/logo.svg?v={version}\" alt=\"{brand}\">\n\
             <h1>{title}</h1>\n<div class=\"meta\">\n\
             <span>{generated} <time id=\"generated\" datetime=\"{iso}\">{at}</time></span>\n\
             <div class=\"refresh\" id=\"refresh\" hidden data-seconds=\"{seconds}\" \
             data-running=\"{running}\" data-paused=\"{paused}\" data-pause=\"{pause}\" \
             data-resume=\"{resume}\"><span id=\"refresh-text\"></span>\
             <button type=\"button\" id=\"refresh-button\"></button></div>\n\
             <a id=\"switch-lang\" href=\"?lang={other_query}\" hreflang=\"{other_code}\" \
             lang=\"{other_code}\" title=\"{switch}\">{other_name}</a>\n</div>\n</header>\n<main>\n",
            brand = self.t(Label::Brand),
            title = self.t(Label::Title),
            generated = self.t(Label::Generated),
            iso = Esc(&iso(self.data.now)),
            at = Esc(&clock(self.data.now)),
            seconds = REFRESH_SECONDS,
            running = self.t(Label::RefreshIn),
            paused = self.t(Label::RefreshPaused),
            pause = self.t(Label::Pause),
            resume = self.t(Label::Resume),
            other_query = other.query(),
            other_code = other.code(),
            switch = self.t(Label::SwitchLanguage),
            other_name = Esc(Label::LangName.text(other)),
        )?;
        self.alerts(out)?;
        self.overview(out)?;
        self.agencies(out)?;
        self.rates(out)?;
        self.lagging(out)?;
        self.breaches(out)?;
        out.push_str("<div class=\"split\">\n");
        self.audit(out)?;
        self.certificates(out)?;
        out.push_str("</div>\n");
        write!(
            out,
            "</main>\n<footer>{footer}</footer>\n<script>{REFRESH_SCRIPT}</script>\n</body>\n</html>\n",
            footer = self.t(Label::Footer),
        )
    }

    /// What needs attention, first on the page.
    fn alerts(&self, out: &mut String) -> fmt::Result {
        let data = self.data;
        let mut problems: Vec<String> = Vec::new();
        if data.store_unreadable() {
            // In both languages, whatever the page's: whoever opens it
            // must understand at once that the figures are incomplete.
            problems.push(format!(
                "<span lang=\"zh-CN\">{}</span> / <span lang=\"en\">{}</span>",
                Esc(Label::StoreUnreadable.text(Lang::Zh)),
                Esc(Label::StoreUnreadable.text(Lang::En)),
            ));
        } else if !data.status.store_healthy {
            problems.push(self.t(Label::StoreFailing).to_string());
        }
        if let Some(lagging) = &data.lagging
            && !lagging.is_empty()
        {
            problems.push(self.tn(Label::ProblemLagging, lagging.len()));
        }
        let breaches = data
            .breaches
            .as_ref()
            .map_or(data.status.breaches_open, |b| b.len() as u64);
        if breaches > 0 {
            problems.push(self.tn(Label::ProblemBreaches, breaches));
        }
        let expiring = data
            .status
            .certificates
            .iter()
            .filter(|c| c.days_left < CERTIFICATE_WARNING_DAYS)
            .count();
        if expiring > 0 {
            problems.push(self.tn(Label::ProblemCertificates, expiring));
        }
        if !data.status.disabled_agencies.is_empty() {
            problems.push(self.tn(Label::ProblemDisabled, data.status.disabled_agencies.len()));
        }
        if problems.is_empty() {
            writeln!(
                out,
                "<div class=\"alerts ok\" id=\"alerts\" role=\"status\"><p>{}</p></div>",
                self.t(Label::AllClear)
            )
        } else {
            write!(
                out,
                "<div class=\"alerts bad\" id=\"alerts\" role=\"alert\"><h2>{}</h2><ul>",
                self.t(Label::Attention)
            )?;
            for problem in problems {
                write!(out, "<li>{problem}</li>")?;
            }
            out.push_str("</ul></div>\n");
            Ok(())
        }
    }

    fn card(
        &self,
        out: &mut String,
        id: &str,
        class: &str,
        key: Label,
        value: &str,
        sub: &str,
    ) -> fmt::Result {
        writeln!(
            out,
            "<div class=\"card {class}\" id=\"{id}\"><div class=\"k\">{}</div>\
             <div class=\"v\">{}</div><div class=\"s\">{}</div></div>",
            self.t(key),
            Esc(value),
            Esc(sub),
        )
    }

    fn overview(&self, out: &mut String) -> fmt::Result {
        let status = &self.data.status;
        let unread = !self.data.status_read;
        let not_reported = Label::NotReported.text(self.lang);
        write!(
            out,
            "<section class=\"panel\" id=\"overview\">\n<h2>{}</h2>\n<div class=\"cards\">\n",
            self.t(Label::Overview)
        )?;
        self.card(out, "version", "", Label::Version, &status.version, "")?;
        let started = status
            .started_at
            .as_ref()
            .and_then(datetime)
            .map(|at| format!("{} {}", Label::StartedAt.text(self.lang), clock(at)))
            .unwrap_or_default();
        self.card(
            out,
            "uptime",
            "",
            Label::Uptime,
            &duration(status.uptime_seconds, self.lang),
            &started,
        )?;
        let store_ok = status.store_healthy && !unread;
        self.card(
            out,
            "store",
            if store_ok { "" } else { "bad" },
            Label::Store,
            &format!(
                "{} · {}",
                status.store_backend,
                if store_ok {
                    Label::Healthy.text(self.lang)
                } else {
                    Label::Failing.text(self.lang)
                }
            ),
            &if status.store_bytes > 0 {
                format!(
                    "{} {}",
                    Label::StoreSize.text(self.lang),
                    bytes(status.store_bytes)
                )
            } else {
                format!("{} {}", Label::StoreSize.text(self.lang), not_reported)
            },
        )?;
        let (high_water, notifications) = if unread {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                status.high_water.to_string(),
                status.notifications.to_string(),
            )
        };
        self.card(out, "high-water", "", Label::HighWater, &high_water, "")?;
        self.card(
            out,
            "notifications",
            "",
            Label::Notifications,
            &notifications,
            "",
        )?;
        self.card(
            out,
            "connections",
            "",
            Label::ConnectionsStreams,
            &format!("{} / {}", status.connections, status.streams),
            "",
        )?;
        let breaches = match (&self.data.breaches, unread) {
            (Some(breaches), _) => Some(breaches.len() as u64),
            (None, false) => Some(status.breaches_open),
            (None, true) => None,
        };
        self.card(
            out,
            "breaches-open",
            if breaches.unwrap_or(0) > 0 { "bad" } else { "" },
            Label::BreachesOpen,
            &breaches.map_or_else(|| "—".to_owned(), |n| n.to_string()),
            "",
        )?;
        let disabled = if unread {
            "—".to_owned()
        } else if status.disabled_agencies.is_empty() {
            Label::NoneWord.text(self.lang).to_owned()
        } else {
            status.disabled_agencies.join(", ")
        };
        self.card(
            out,
            "disabled",
            if status.disabled_agencies.is_empty() {
                ""
            } else {
                "warn"
            },
            Label::DisabledAgencies,
            &disabled,
            "",
        )?;
        out.push_str("</div>\n</section>\n");
        Ok(())
    }

    fn section_start(&self, out: &mut String, id: &str, title: Label, note: Option<Label>) {
        let _ = write!(
            out,
            "<section class=\"panel\" id=\"{id}\">\n<h2>{}",
            self.t(title)
        );
        if let Some(note) = note {
            let _ = write!(out, "<span class=\"note\">{}</span>", self.t(note));
        }
        out.push_str("</h2>\n");
    }

    fn unavailable(&self, out: &mut String) {
        let _ = write!(
            out,
            "<p class=\"empty\"><span class=\"pill bad\">{}</span></p>\n</section>\n",
            self.t(Label::SectionUnavailable)
        );
    }

    fn empty(&self, out: &mut String, label: Label) {
        let _ = write!(
            out,
            "<p class=\"empty\">{}</p>\n</section>\n",
            self.t(label)
        );
    }

    fn head(&self, out: &mut String, columns: &[(Label, bool)]) {
        out.push_str("<table>\n<thead><tr>");
        for (label, numeric) in columns {
            let class = if *numeric { " class=\"n\"" } else { "" };
            let _ = write!(out, "<th{class}>{}</th>", self.t(*label));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
    }

    /// A time with its age: `2026-11-30 10:00:00 UTC (3 min ago)`, or
    /// `never`.
    fn when(&self, at: Option<&prost_types::Timestamp>, never: Label) -> String {
        match at.and_then(datetime) {
            Some(at) => {
                let age = (self.data.now - at).whole_seconds().max(0) as u64;
                format!(
                    "<time datetime=\"{}\">{}</time> <span class=\"muted\">({})</span>",
                    Esc(&iso(at)),
                    Esc(&clock(at)),
                    Esc(&Label::Ago
                        .text(self.lang)
                        .replace("{x}", &duration(age, self.lang))),
                )
            }
            None => format!("<span class=\"muted\">{}</span>", self.t(never)),
        }
    }

    fn role(&self, role: &str) -> String {
        let label = match role {
            "ENVIRONMENT" => Some(Label::RoleEnvironment),
            "POLICE" => Some(Label::RolePolice),
            "PROCURATORATE" => Some(Label::RoleProcuratorate),
            "OBSERVER" => Some(Label::RoleObserver),
            "OPERATOR" => Some(Label::RoleOperator),
            _ => None,
        };
        match label {
            Some(label) => escape(label.text(self.lang)),
            None => escape(role),
        }
    }

    fn agencies(&self, out: &mut String) -> fmt::Result {
        self.section_start(out, "agencies", Label::AgenciesTitle, None);
        let Some(agencies) = &self.data.agencies else {
            self.unavailable(out);
            return Ok(());
        };
        if agencies.is_empty() {
            self.empty(out, Label::NoAgencies);
            return Ok(());
        }
        self.head(
            out,
            &[
                (Label::ColId, false),
                (Label::ColName, false),
                (Label::ColRole, false),
                (Label::ColConnections, true),
                (Label::ColConnectedSince, false),
                (Label::ColStreams, true),
                (Label::ColLastPublish, false),
                (Label::ColLastRefusal, false),
                (Label::ColState, false),
            ],
        );
        for agency in agencies {
            let disabled = agency.state.as_ref().is_some_and(|s| s.disabled);
            let connected = if agency.connections > 0 {
                self.when(agency.connected_since.as_ref(), Label::NotReported)
            } else {
                format!(
                    "<span class=\"muted\">{}</span>",
                    self.t(Label::NotConnected)
                )
            };
            let refusal = if agency.last_refusal.is_some() {
                format!(
                    "{}<br><span class=\"muted\">{}</span>",
                    self.when(agency.last_refusal.as_ref(), Label::Never),
                    Esc(&agency.last_refusal_reason)
                )
            } else {
                self.when(None, Label::Never)
            };
            let state = match agency.state.as_ref().filter(|s| s.disabled) {
                Some(state) => format!(
                    "<span class=\"pill bad\">{}</span><br><span class=\"muted\">{} {} · {}</span><br>{}",
                    self.t(Label::Disabled),
                    self.t(Label::By),
                    Esc(&state.disabled_by),
                    Esc(&state.reason),
                    self.when(state.disabled_at.as_ref(), Label::NotReported),
                ),
                None => format!("<span class=\"pill ok\">{}</span>", self.t(Label::Enabled)),
            };
            writeln!(
                out,
                "<tr data-agency=\"{id}\"{class}><td><code>{id}</code></td><td>{name}</td>\
                 <td>{role}</td><td class=\"n\">{connections}</td><td>{connected}</td>\
                 <td class=\"n\">{streams}</td><td>{publish}</td><td>{refusal}</td><td>{state}</td></tr>",
                id = Esc(&agency.id),
                class = if disabled { " class=\"bad\"" } else { "" },
                name = Esc(&agency.name),
                role = self.role(&agency.role),
                connections = agency.connections,
                streams = agency.streams,
                publish = self.when(agency.last_publish.as_ref(), Label::Never),
            )?;
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
        Ok(())
    }

    fn rates(&self, out: &mut String) -> fmt::Result {
        self.section_start(out, "rates", Label::RatesTitle, Some(Label::RatesNote));
        let Some(rates) = &self.data.rates else {
            self.unavailable(out);
            return Ok(());
        };
        // Every registered agency, then any other sender (the gateway's
        // own alerts), so a silent agency shows as silent.
        let mut rows: Vec<PublishCounts> = self
            .data
            .agencies
            .iter()
            .flatten()
            .map(|agency| {
                rates
                    .iter()
                    .find(|rate| rate.agency == agency.id)
                    .cloned()
                    .unwrap_or_else(|| PublishCounts {
                        agency: agency.id.clone(),
                        last_5_minutes: 0,
                        last_hour: 0,
                    })
            })
            .collect();
        for rate in rates {
            if !rows.iter().any(|row| row.agency == rate.agency) {
                rows.push(rate.clone());
            }
        }
        if rows.iter().all(|row| row.last_hour == 0) {
            self.empty(out, Label::NoPublishes);
            return Ok(());
        }
        self.head(
            out,
            &[
                (Label::ColId, false),
                (Label::Col5Min, true),
                (Label::ColHour, true),
                (Label::ColPerMinute, true),
            ],
        );
        for row in rows {
            writeln!(
                out,
                "<tr data-rate=\"{id}\"{class}><td><code>{id}</code></td><td class=\"n\">{recent}</td>\
                 <td class=\"n\">{hour}</td><td class=\"n\">{per_minute:.1}</td></tr>",
                id = Esc(&row.agency),
                class = if row.last_hour == 0 {
                    " class=\"muted\""
                } else {
                    ""
                },
                recent = row.last_5_minutes,
                hour = row.last_hour,
                per_minute = row.last_hour as f64 / 60.0,
            )?;
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
        Ok(())
    }

    fn lagging(&self, out: &mut String) -> fmt::Result {
        self.section_start(
            out,
            "lagging",
            Label::LaggingTitle,
            Some(Label::LaggingNote),
        );
        let Some(lagging) = &self.data.lagging else {
            self.unavailable(out);
            return Ok(());
        };
        if lagging.is_empty() {
            self.empty(out, Label::NoLag);
            return Ok(());
        }
        self.head(
            out,
            &[
                (Label::ColOwner, false),
                (Label::ColSubscription, false),
                (Label::ColFilter, false),
                (Label::ColAcked, true),
                (Label::ColLag, true),
                (Label::ColLagAge, false),
                (Label::ColInFlight, true),
                (Label::ColConnected, false),
                (Label::ColUpdated, false),
            ],
        );
        for sub in lagging {
            let lag = if sub.lag_capped {
                format!("≥{}", sub.lag_messages)
            } else {
                sub.lag_messages.to_string()
            };
            let age = if sub.lag_seconds > 0 {
                duration(sub.lag_seconds, self.lang)
            } else {
                "—".to_owned()
            };
            let filter = if sub.filter.is_empty() {
                Label::AnyFilter.text(self.lang)
            } else {
                &sub.filter
            };
            let stream = if sub.connected {
                format!("<span class=\"pill warn\">{}</span>", self.t(Label::Online))
            } else if !sub.held_by.is_empty() {
                format!(
                    "<span class=\"pill warn\" title=\"{}\">{}</span>",
                    Esc(&sub.held_by),
                    self.t(Label::OnAnotherReplica)
                )
            } else {
                format!("<span class=\"pill off\">{}</span>", self.t(Label::Offline))
            };
            writeln!(
                out,
                "<tr class=\"warn\" data-subscription=\"{owner}/{name}\"><td><code>{owner}</code></td>\
                 <td><code>{name}</code></td><td>{filter}</td><td class=\"n\">{acked}</td>\
                 <td class=\"n lag\">{lag}</td><td>{age}</td><td class=\"n\">{in_flight}</td>\
                 <td>{stream}</td><td>{updated}</td></tr>",
                owner = Esc(&sub.owner),
                name = Esc(&sub.name),
                filter = Esc(filter),
                acked = sub.acked_through,
                lag = Esc(&lag),
                age = Esc(&age),
                in_flight = sub.in_flight,
                updated = self.when(sub.updated_at.as_ref(), Label::NotReported),
            )?;
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
        Ok(())
    }

    fn breaches(&self, out: &mut String) -> fmt::Result {
        self.section_start(out, "breaches", Label::BreachesTitle, None);
        let Some(breaches) = &self.data.breaches else {
            self.unavailable(out);
            return Ok(());
        };
        if breaches.is_empty() {
            self.empty(out, Label::NoBreaches);
            return Ok(());
        }
        self.head(
            out,
            &[
                (Label::ColCase, false),
                (Label::ColRule, false),
                (Label::ColLate, false),
                (Label::ColDue, false),
                (Label::ColRegion, false),
                (Label::ColState, false),
                (Label::ColDetail, false),
            ],
        );
        for breach in breaches {
            let state = pb::CaseState::try_from(breach.state)
                .map(|state| {
                    let name = state.as_str_name();
                    name.strip_prefix("CASE_STATE_").unwrap_or(name).to_owned()
                })
                .unwrap_or_default();
            writeln!(
                out,
                "<tr class=\"bad\" data-case=\"{case}\"><td><code>{case}</code></td><td>{rule}</td>\
                 <td><code>{agency}</code></td><td>{due}</td><td>{region}</td><td>{state}</td>\
                 <td class=\"muted\">{detail}</td></tr>",
                case = Esc(&breach.case_ref),
                rule = Esc(&breach.rule),
                agency = Esc(&breach.agency),
                due = self.when(breach.since.as_ref(), Label::NotReported),
                region = Esc(&breach.region),
                state = Esc(&state),
                detail = Esc(&breach.detail),
            )?;
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
        Ok(())
    }

    fn audit(&self, out: &mut String) -> fmt::Result {
        self.section_start(out, "audit", Label::AuditTitle, None);
        if !self.data.status_read {
            self.unavailable(out);
            return Ok(());
        }
        let Some(audit) = &self.data.status.audit else {
            self.empty(out, Label::NotReported);
            return Ok(());
        };
        let checkpoint = if audit.checkpoint_at.is_some() {
            format!(
                "{} · {}",
                self.tn(Label::AuditRow, audit.checkpoint_row),
                self.when(audit.checkpoint_at.as_ref(), Label::NoCheckpoint)
            )
        } else {
            format!(
                "<span class=\"pill warn\">{}</span>",
                self.t(Label::NoCheckpoint)
            )
        };
        write!(
            out,
            "<dl class=\"facts\"><dt>{rows_label}</dt><dd id=\"audit-rows\">{rows}</dd>\
             <dt>{head_label}</dt><dd>{head}</dd><dt>{checkpoint_label}</dt><dd>{checkpoint}</dd>\
             <dt>{since_label}</dt><dd>{since}</dd></dl>\n</section>\n",
            rows_label = self.t(Label::AuditRows),
            rows = audit.rows,
            head_label = self.t(Label::AuditHead),
            head = self.when(audit.head_at.as_ref(), Label::NotReported),
            checkpoint_label = self.t(Label::AuditCheckpoint),
            since_label = self.t(Label::AuditSince),
            since = audit.rows_since_checkpoint,
        )
    }

    fn certificates(&self, out: &mut String) -> fmt::Result {
        self.section_start(out, "certificates", Label::CertsTitle, None);
        let certificates = &self.data.status.certificates;
        if certificates.is_empty() {
            if self.data.status_read {
                self.empty(out, Label::NoCerts);
            } else {
                self.unavailable(out);
            }
            return Ok(());
        }
        let mut sorted: Vec<&pb::CertificateExpiry> = certificates.iter().collect();
        sorted.sort_by_key(|c| c.days_left);
        self.head(
            out,
            &[
                (Label::ColWhat, false),
                (Label::ColNotAfter, false),
                (Label::ColDaysLeft, true),
            ],
        );
        for certificate in sorted {
            let (class, days) = if certificate.days_left < 0 {
                (
                    " class=\"bad\"",
                    format!("<span class=\"pill bad\">{}</span>", self.t(Label::Expired)),
                )
            } else if certificate.days_left < CERTIFICATE_WARNING_DAYS {
                (
                    " class=\"warn\"",
                    format!("<span class=\"pill warn\">{}</span>", certificate.days_left),
                )
            } else {
                ("", certificate.days_left.to_string())
            };
            let not_after = certificate
                .not_after
                .as_ref()
                .and_then(datetime)
                .map(clock)
                .unwrap_or_default();
            writeln!(
                out,
                "<tr{class}><td>{what}</td><td>{not_after}</td><td class=\"n\">{days}</td></tr>",
                what = Esc(&certificate.what),
                not_after = Esc(&not_after),
            )?;
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
        Ok(())
    }
}

fn datetime(ts: &prost_types::Timestamp) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(ts.seconds).ok()
}

/// `2026-11-30 22:41:45 UTC`.
pub fn clock(at: time::OffsetDateTime) -> String {
    crate::ops::snapshot::utc_clock(at)
}

fn iso(at: time::OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A span in the two largest units: `2d 3h`, `4min 5s`; `2天3小时`.
pub fn duration(seconds: u64, lang: Lang) -> String {
    let parts = [
        (seconds / 86_400, Label::UnitDay),
        ((seconds / 3_600) % 24, Label::UnitHour),
        ((seconds / 60) % 60, Label::UnitMinute),
        (seconds % 60, Label::UnitSecond),
    ];
    let first = parts
        .iter()
        .position(|(n, _)| *n > 0)
        .unwrap_or(parts.len() - 1);
    let separator = match lang {
        Lang::Zh => "",
        Lang::En => " ",
    };
    parts[first..]
        .iter()
        .take(2)
        .enumerate()
        .filter(|(i, (n, _))| *i == 0 || *n > 0)
        .map(|(_, (n, unit))| format!("{n}{}", unit.text(lang)))
        .collect::<Vec<_>>()
        .join(separator)
}

/// `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
