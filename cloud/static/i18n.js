// Labels of the web app in English and Chinese; t(key) picks the page's language.
const LABELS = {
  en: {
    lang_switch: "中文", sites: "Sites", login: "Log in", logout: "Log out",
    username: "Username", password: "Password", login_failed: "Wrong username or password",
    site: "Site", status: "Status", online: "online", offline: "offline",
    last_data: "Last data", active_alarms: "Active alarms", risk: "Risk status",
    points: "Points", no_sites: "No site is visible to this account yet.",
    forbidden: "This account may not see this site.", not_found: "No such site.",
    back: "Back to the sites", plan: "Site plan", no_layout:
      "No plan is configured for this site (an engineer sets it with PUT /api/sites/SITE/layout).",
    flow: "groundwater flow", latest: "Latest values", point: "Point", value: "Value",
    quality: "Quality", time: "Time", trend: "Trend", range_all: "All", range_1y: "1 year",
    range_30d: "30 days", range_7d: "7 days", range_1d: "1 day", range_1h: "1 hour",
    from: "From", to: "To", apply: "Apply", reset_zoom: "Reset zoom",
    export_csv: "Export CSV", zoom_hint: "Drag across the chart to zoom in.",
    readings: "readings", bucketed: "min / max per bucket of", no_data: "No readings in this range.",
    mean: "mean", min: "min", max: "max",
    alarms: "Alarms", alarm: "Alarm", state: "State", severity: "Severity",
    message: "Message", history: "Alarm history", no_alarms: "No alarm events.",
    acknowledge: "Acknowledge", comment: "Comment", comment_ph: "What was done (required for an audit trail)",
    acks: "Acknowledgements and comments", by: "By", kind: "Kind", none_active: "No active alarm.",
    ack: "acknowledged", note: "comment", leak_tests: "Leak tests and effect evaluation",
    no_results: "No leak-test results or effect-evaluation verdicts from this receiver yet.",
    gateways: "Gateways", role: "Role", open_mode: "No accounts exist: the API is open.",
    saved: "Saved", failed: "Failed", near_term: "Near term: contained",
    mid_term: "Mid term: falling", long_term: "Long term: meets target",
  },
  zh: {
    lang_switch: "English", sites: "站点", login: "登录", logout: "退出",
    username: "用户名", password: "密码", login_failed: "用户名或密码错误",
    site: "站点", status: "状态", online: "在线", offline: "离线",
    last_data: "最新数据", active_alarms: "当前报警", risk: "风险状态",
    points: "测点", no_sites: "此账号暂无可见站点。",
    forbidden: "此账号无权查看该站点。", not_found: "没有该站点。",
    back: "返回站点列表", plan: "站点平面图", no_layout:
      "该站点尚未配置平面图（工程师可通过 PUT /api/sites/SITE/layout 设置）。",
    flow: "地下水流向", latest: "最新数值", point: "测点", value: "数值",
    quality: "数据质量", time: "时间", trend: "趋势", range_all: "全部", range_1y: "1年",
    range_30d: "30天", range_7d: "7天", range_1d: "1天", range_1h: "1小时",
    from: "从", to: "到", apply: "应用", reset_zoom: "重置缩放",
    export_csv: "导出 CSV", zoom_hint: "在图上拖动以放大。",
    readings: "条读数", bucketed: "每段最小/最大值，段长", no_data: "此时间范围内无读数。",
    mean: "均值", min: "最小", max: "最大",
    alarms: "报警", alarm: "报警", state: "状态", severity: "级别",
    message: "信息", history: "报警历史", no_alarms: "无报警事件。",
    acknowledge: "确认", comment: "备注", comment_ph: "处置说明（记入审计日志）",
    acks: "确认与备注", by: "操作人", kind: "类型", none_active: "当前无报警。",
    ack: "已确认", note: "备注", leak_tests: "泄漏检测与效果评估",
    no_results: "本接收端暂无泄漏检测结果或效果评估结论。",
    gateways: "网关", role: "角色", open_mode: "尚无账号：API 对所有人开放。",
    saved: "已保存", failed: "失败", near_term: "近期：得到控制",
    mid_term: "中期：呈下降趋势", long_term: "远期：达到目标",
  },
};

const STATES = {
  zh: { raised: "报警", cleared: "已恢复", acknowledged: "已确认", good: "正常",
        out_of_range: "超量程", sentinel: "无效值", device_error: "设备故障",
        comm_lost: "通讯中断", stale: "数据停滞", maintenance: "维护中",
        clock_unsynced: "时钟未同步", regulator: "监管", enterprise: "企业",
        engineer: "工程师", green: "绿", yellow: "黄", orange: "橙", red: "红",
        online: "在线", offline: "离线" },
};

export function currentLang() {
  const saved = localStorage.getItem("gw_lang");
  if (saved === "en" || saved === "zh") return saved;
  return document.documentElement.lang === "zh" ? "zh" : "en";
}

export function setLang(lang) {
  localStorage.setItem("gw_lang", lang);
  document.cookie = `gw_lang=${lang}; path=/; max-age=31536000; samesite=lax`;
  document.documentElement.lang = lang;
}

export function t(key) {
  const lang = currentLang();
  return (LABELS[lang] && LABELS[lang][key]) || LABELS.en[key] || key;
}

// A state, quality or role name as the page shows it.
export function term(word) {
  const lang = currentLang();
  return (STATES[lang] && STATES[lang][word]) || word;
}
