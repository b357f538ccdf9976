//! Every word the status page shows, in Chinese and English, from one
//! table: a label added here has both texts or does not compile.

/// A language the status page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Simplified Chinese, the default.
    Zh,
    /// English.
    En,
}

impl Lang {
    /// Both languages, Chinese first.
    pub const ALL: [Lang; 2] = [Lang::Zh, Lang::En];

    /// The `lang` attribute and `?lang=` value.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The `?lang=` value.
    pub fn query(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The other language (the switch link's target).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// The language a `?lang=` value names (`zh`, `en`, any case, with or
    /// without a region), if any.
    pub fn from_query(value: &str) -> Option<Lang> {
        let primary = value.split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("zh") {
            Some(Lang::Zh)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The language an `Accept-Language` header prefers among Chinese and
    /// English (the highest `q`, the first of equals), if it names either.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut best: Option<(Lang, f32)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default().trim();
            let Some(lang) = Lang::from_query(tag) else {
                continue;
            };
            let mut q = 1.0_f32;
            for param in parts {
                if let Some(value) = param.trim().strip_prefix("q=") {
                    q = value.trim().parse().unwrap_or(0.0);
                }
            }
            if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((lang, q));
            }
        }
        best.map(|(lang, _)| lang)
    }
}

macro_rules! labels {
    ($($(#[$doc:meta])* $name:ident => $zh:literal, $en:literal;)*) => {
        /// A piece of text on the status page.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Label {
            $($(#[$doc])* $name,)*
        }

        impl Label {
            /// Every label.
            pub const ALL: &'static [Label] = &[$(Label::$name,)*];

            /// The text in `lang`.
            pub fn text(self, lang: Lang) -> &'static str {
                match (self, lang) {
                    $(
                        (Label::$name, Lang::Zh) => $zh,
                        (Label::$name, Lang::En) => $en,
                    )*
                }
            }
        }
    };
}

labels! {
    /// The language's own name, on the link that switches to it.
    LangName => "中文", "English";
    /// The page title.
    Title => "联动网关 · 运行状态", "Liandong gateway · status";
    /// The product's name beside the logo.
    Brand => "联动", "Liandong";
    /// Before the time the page was made.
    Generated => "生成于", "Generated";
    /// The refresh control while counting down; `{n}` is seconds.
    RefreshIn => "{n} 秒后自动刷新", "Refreshing in {n} s";
    /// The refresh control while paused.
    RefreshPaused => "自动刷新已暂停", "Auto-refresh paused";
    /// The button that pauses the refresh.
    Pause => "暂停", "Pause";
    /// The button that resumes it.
    Resume => "继续", "Resume";
    /// The switch link's title.
    SwitchLanguage => "切换语言", "Switch language";

    /// The problems box's heading.
    Attention => "需要关注", "Needs attention";
    /// No problem found.
    AllClear => "一切正常：存储可用，无滞后订阅，无超期，证书有效期充足。",
        "All clear: store working, no subscription behind, no breach, certificates valid.";
    /// The store could not be read.
    StoreUnreadable => "存储无法读取，以下数据不完整。", "The store cannot be read; what follows is incomplete.";
    /// Writes fail.
    StoreFailing => "存储写入失败（健康检查为 NOT_SERVING）。", "Store writes are failing (health is NOT_SERVING).";
    /// `{n}` subscriptions behind.
    ProblemLagging => "{n} 个订阅滞后。", "{n} subscription(s) behind.";
    /// `{n}` breaches open.
    ProblemBreaches => "{n} 个办理期限已超期。", "{n} deadline(s) breached.";
    /// `{n}` certificates expiring.
    ProblemCertificates => "{n} 个证书或吊销列表将在 14 天内到期或已过期。",
        "{n} certificate(s) or CRL(s) expire within 14 days or have expired.";
    /// `{n}` agencies disabled.
    ProblemDisabled => "{n} 个机构已被运维停用。", "{n} agency(ies) disabled by an operator.";
    /// A section whose data could not be read.
    SectionUnavailable => "暂时无法读取。", "Cannot be read now.";

    /// Overall state section.
    Overview => "总体状态", "Overall state";
    /// Gateway version.
    Version => "版本", "Version";
    /// Time since start.
    Uptime => "运行时间", "Uptime";
    /// Before the start time.
    StartedAt => "启动于", "started";
    /// The store.
    Store => "存储", "Store";
    /// The store works.
    Healthy => "正常", "healthy";
    /// The store fails.
    Failing => "异常", "failing";
    /// Database size.
    StoreSize => "数据库大小", "Database size";
    /// Highest sequence stored.
    HighWater => "最高序号", "High-water sequence";
    /// Notifications stored.
    Notifications => "已存通知", "Notifications stored";
    /// Live TLS connections and open subscription streams.
    ConnectionsStreams => "连接 / 订阅流", "Connections / streams";
    /// Open breaches.
    BreachesOpen => "未处理超期", "Open breaches";
    /// Agencies disabled.
    DisabledAgencies => "已停用机构", "Disabled agencies";
    /// Nothing to list.
    NoneWord => "无", "none";
    /// A value the gateway does not report.
    NotReported => "未提供", "not reported";
    /// Never happened.
    Never => "从未", "never";

    /// Agencies section.
    AgenciesTitle => "已注册机构", "Registered agencies";
    /// Agency id.
    ColId => "标识", "ID";
    /// Agency name.
    ColName => "名称", "Name";
    /// Agency role.
    ColRole => "角色", "Role";
    /// Live connections.
    ColConnections => "连接", "Connections";
    /// Oldest connection's start.
    ColConnectedSince => "连接始于", "Connected since";
    /// Open streams.
    ColStreams => "订阅流", "Streams";
    /// Last publish.
    ColLastPublish => "最近发布", "Last publish";
    /// Last refusal.
    ColLastRefusal => "最近拒绝", "Last refusal";
    /// Enabled or disabled.
    ColState => "状态", "State";
    /// The agency may connect.
    Enabled => "启用", "enabled";
    /// An operator disabled the agency.
    Disabled => "已停用", "disabled";
    /// Before the disabling operator.
    By => "操作员", "by";
    /// No agency registered.
    NoAgencies => "没有已注册的机构。", "No agency is registered.";
    /// Role ENVIRONMENT.
    RoleEnvironment => "生态环境部门", "environment";
    /// Role POLICE.
    RolePolice => "公安机关", "police";
    /// Role PROCURATORATE.
    RoleProcuratorate => "检察机关", "procuratorate";
    /// Role OBSERVER.
    RoleObserver => "观察方", "observer";
    /// Role OPERATOR.
    RoleOperator => "运维", "operator";

    /// Message rates section.
    RatesTitle => "消息速率", "Message rates";
    /// What the rates count.
    RatesNote => "网关已接收的发布数，按发送机构统计。", "Publishes the gateway accepted, per sending agency.";
    /// The five-minute window.
    Col5Min => "近 5 分钟", "Last 5 min";
    /// The hour window.
    ColHour => "近 1 小时", "Last hour";
    /// Per-minute average over the hour.
    ColPerMinute => "每分钟（1 小时平均）", "Per minute (hour average)";
    /// No publish in the hour.
    NoPublishes => "近 1 小时没有发布。", "No publish in the last hour.";

    /// Lagging subscriptions section.
    LaggingTitle => "滞后订阅", "Lagging subscriptions";
    /// Sort order of the section.
    LaggingNote => "按滞后程度排列，最严重的在前。", "Worst first.";
    /// Subscription owner.
    ColOwner => "所属机构", "Owner";
    /// Subscription name.
    ColSubscription => "订阅", "Subscription";
    /// Filter in words.
    ColFilter => "过滤条件", "Filter";
    /// Acknowledged through.
    ColAcked => "已确认至", "Acked through";
    /// Lag in messages.
    ColLag => "滞后（条）", "Lag (messages)";
    /// Age of the oldest waiting message.
    ColLagAge => "最早未确认", "Oldest waiting";
    /// Sent and not yet acknowledged.
    ColInFlight => "在途", "In flight";
    /// Connected or not.
    ColConnected => "连接", "Stream";
    /// Last moved.
    ColUpdated => "位置更新于", "Position moved";
    /// The stream is open.
    Online => "在线", "open";
    /// The stream is closed.
    Offline => "已断开", "closed";
    /// The stream is open on another gateway replica.
    OnAnotherReplica => "在其他副本", "open on another replica";
    /// The agency has no live connection.
    NotConnected => "未连接", "not connected";
    /// Every notification.
    AnyFilter => "全部", "everything";
    /// None behind.
    NoLag => "没有滞后的订阅。", "No subscription is behind.";

    /// Breaches section.
    BreachesTitle => "超期未办", "Breached deadlines";
    /// Case reference.
    ColCase => "案件编号", "Case";
    /// The deadline rule.
    ColRule => "规则", "Rule";
    /// The agency that has not acted.
    ColLate => "应办机构", "Late agency";
    /// When it was due.
    ColDue => "到期", "Due";
    /// Region code.
    ColRegion => "区划", "Region";
    /// Detail in words.
    ColDetail => "说明", "Detail";
    /// None open.
    NoBreaches => "没有超期未办的期限。", "No deadline is breached.";

    /// Audit section.
    AuditTitle => "审计日志", "Audit log";
    /// Audit rows.
    AuditRows => "记录数", "Rows";
    /// Newest row.
    AuditHead => "最新记录于", "Newest row at";
    /// Latest signed checkpoint.
    AuditCheckpoint => "最近签名检查点", "Latest signed checkpoint";
    /// Before the checkpoint's row.
    AuditRow => "第 {n} 行", "row {n}";
    /// Rows since the checkpoint.
    AuditSince => "检查点之后的记录", "Rows since checkpoint";
    /// No checkpoint.
    NoCheckpoint => "尚无检查点", "no checkpoint yet";

    /// Certificates section.
    CertsTitle => "证书与吊销列表", "Certificates and CRLs";
    /// What the certificate is.
    ColWhat => "对象", "What";
    /// Valid until.
    ColNotAfter => "有效期至", "Valid until";
    /// Days left.
    ColDaysLeft => "剩余天数", "Days left";
    /// Past its end.
    Expired => "已过期", "expired";
    /// Nothing reported.
    NoCerts => "网关未报告证书信息。", "The gateway reported no certificate.";

    /// Days unit.
    UnitDay => "天", "d";
    /// Hours unit.
    UnitHour => "小时", "h";
    /// Minutes unit.
    UnitMinute => "分", "min";
    /// Seconds unit.
    UnitSecond => "秒", "s";
    /// `{x}` ago.
    Ago => "{x}前", "{x} ago";
    /// The page's promise about content.
    Footer => "本页只显示标识、计数、时间和状态，从不显示案件内容。",
        "This page shows ids, counts, times and states only, never case content.";
}
