// SkyeIM web page: group chat (docs/protocol.md "Groups"). A module of the page:
// app.js calls createGroups({...}) with what it shares (the REST helper, the
// session, its SkyeClient), and listen(client) for every new client; the group
// frames come as the client's typed events. Group administration (roles, kick, mute,
// rename, dismiss: the Members panel) and mentions (`@username` of a member in a message;
// messages that mention me are highlighted) follow docs/protocol.md "Group administration"
// and "Mentions in groups". Pin and mute of a group conversation (the flags of
// docs/protocol.md "Conversation list") and recall/edit of my own group messages
// ("Recall, edit, delete") work as they do for a 1:1 conversation.
// Every piece of user content reaches the DOM through textContent, never as HTML.
import { ErrorCode } from "./skyeim-client.js";

export function createGroups(app) {
  const PAGE_SIZE = 50;
  const SYNC_ROUNDS = 20;          // follow-ups of a sync cut short, per connection
  const TYPING_SEND_MS = 3000;     // while typing, tell the group at most this often
  const TYPING_SHOW_MS = 5000;     // "… is typing" stays this long after the last signal
  const $ = (id) => document.getElementById(id);
  // app: {api, uuid4, closeConversation, session(), client(), name(id), friendId(lowerName)}
  const wsSend = (type, data) => { const c = app.client(); return Boolean(c) && c.sendFrame(type, data); };
  const groups = new Map();        // groupId -> {groupId, name, lastSeq, readSeq, msgs: Map, unread}
  const pending = new Map();       // msgId -> my message awaiting its ack
  let current = null;              // open groupId
  let syncRounds = 0;
  const typers = new Map();        // groupId -> Map(userId -> timer hiding its "is typing")
  let typingSentAt = 0, typingGroup = null;
  const changing = new Set();      // msgIds of my recalls/edits awaiting their answer
  let changedSince = 0;            // serverTime of the last group sync: recalls/edits since
  let syncIds = 0;

  function group(gid) {
    let g = groups.get(gid);
    if (!g) {
      g = { groupId: gid, name: `Group #${gid}`, lastSeq: 0, readSeq: 0, msgs: new Map(), unread: 0,
        mentions: 0, members: new Map(), pinned: false, muted: false };
      groups.set(gid, g);
    }
    return g;
  }

  function held(g) {               // the newest seq held
    let s = 0;
    for (const m of g.msgs.values()) if (m.seq > s) s = m.seq;
    return s;
  }

  function merge(g, m) {
    const key = `${m.fromUserId}:${m.msgId}`;
    const had = g.msgs.get(key);
    g.msgs.set(key, { ...had, ...m });
    if (Number.isInteger(m.seq) && m.seq > g.lastSeq) g.lastSeq = m.seq;
    return !had;
  }

  async function refresh() {
    try {
      const d = await app.api("GET", "/api/groups");
      for (const x of d.groups || []) {
        const g = group(x.groupId);
        g.name = x.name; g.lastSeq = Math.max(g.lastSeq, x.lastSeq || 0);
        g.readSeq = Math.max(g.readSeq, x.readSeq || 0);
        g.unread = Math.max(0, g.lastSeq - g.readSeq);
        g.mentions = Number.isInteger(x.mentions) ? x.mentions : 0;
      }
      render();
    } catch (e) { console.warn("groups", e); }
  }

  function render() {
    const list = $("group-list");
    list.textContent = "";
    // pinned groups first, then by id (the same order whichever list loaded first)
    const ordered = [...groups.values()].sort((a, b) =>
      Number(b.pinned) - Number(a.pinned) || a.groupId - b.groupId);
    for (const g of ordered) {
      const li = document.createElement("li");
      li.className = "friend group" + (g.groupId === current ? " active" : "");
      li.dataset.groupId = String(g.groupId);
      li.dataset.pinned = String(g.pinned);
      li.dataset.muted = String(g.muted);
      const name = document.createElement("span");
      name.className = "friend-name";
      name.textContent = g.name;
      li.appendChild(name);
      for (const [on, icon, title] of [[g.pinned, "📌", "pinned"], [g.muted, "🔕", "Muted"]]) {
        if (!on) continue;
        const flag = document.createElement("span");
        flag.className = "conv-flag";
        flag.textContent = icon;
        flag.title = title;
        li.appendChild(flag);
      }
      if (g.unread > 0 && g.groupId !== current) {
        const badge = document.createElement("span");
        badge.className = g.muted ? "badge muted" : "badge";
        badge.textContent = String(g.unread);
        li.appendChild(badge);
      }
      if (g.mentions > 0 && g.groupId !== current) {
        const badge = document.createElement("span");
        badge.className = "badge mention-badge";
        badge.title = "mentions of you";
        badge.textContent = `@${g.mentions}`;
        li.appendChild(badge);
      }
      li.addEventListener("click", () => open(g.groupId));
      list.appendChild(li);
    }
    show($("no-groups"), groups.size === 0);
    if (current != null) { renderHead(); renderMessages(); }
  }

  // -- pin and mute (POST /api/conversations/pin|mute with a groupId) ------------------------
  function renderHead() {
    const g = group(current);
    $("group-pin").textContent = g.pinned ? "Unpin" : "Pin";
    $("group-pin").setAttribute("aria-pressed", String(g.pinned));
    $("group-mute").textContent = g.muted ? "Unmute" : "Mute";
    $("group-mute").setAttribute("aria-pressed", String(g.muted));
  }

  // the flags of the groups in GET /api/conversations (app.js fetches the list)
  function setFlags(items) {
    for (const x of items) {
      if (!Number.isInteger(x.groupId)) continue;     // (the list has only my groups)
      const g = group(x.groupId);
      if (typeof x.name === "string" && g.name.startsWith("Group #")) g.name = x.name;
      g.pinned = Boolean(x.pinned);
      g.muted = Boolean(x.muted);
    }
    render();
  }

  // conversation_updated {groupId, muted, pinned}, or the answer of a toggle
  function onFlags(d) {
    if (!Number.isInteger(d.groupId) || !groups.has(d.groupId)) return;
    const g = group(d.groupId);
    g.pinned = Boolean(d.pinned);
    g.muted = Boolean(d.muted);
    render();
  }

  async function toggleFlag(what) {
    if (current == null) return;
    const g = group(current);
    // the API's field for each toggle (backquoted: `muted` is a field here, not ErrorCode.MUTED)
    const FLAG = { pin: `pinned`, mute: `muted` };
    const field = FLAG[what];
    try {
      onFlags(await app.api("POST", `/api/conversations/${what}`,
        { groupId: g.groupId, [field]: !g[field] }));
    } catch (err) { status(err.message || "That did not work.", true); }
  }

  // -- recall and edit of my own messages -----------------------------------------------------
  function messageActions(m) {
    const row = document.createElement("div");
    row.className = "msg-actions";
    const action = (name, label, fn) => row.appendChild(button(label, name, fn, "msg-action"));
    const client = () => app.client();
    action("edit", "Edit", () => {
      const text = window.prompt("Edit message", m.content);
      if (text && text !== m.content && client()) {
        changing.add(m.msgId);
        client().edit(m.msgId, text, m.groupId);
      }
    });
    action("recall", "Recall", () => {
      if (!client()) return;
      changing.add(m.msgId);
      client().recall(m.msgId, m.groupId);
    });
    return row;
  }

  // message_recalled / message_edited with a groupId: every member's page follows
  function onChangedMessage(d, apply) {
    if (!Number.isInteger(d.groupId)) return;
    changing.delete(d.msgId);
    const g = groups.get(d.groupId);
    const m = g && g.msgs.get(`${d.fromUserId}:${d.msgId}`);
    if (!m) return;
    apply(m);
    if (current === d.groupId) renderMessages();
  }

  function renderMessages() {
    const g = group(current);
    $("group-name").textContent = g.name;
    const ol = $("group-message-list");
    ol.textContent = "";
    const me = app.session().userId;
    const msgs = [...g.msgs.values()].sort((a, b) =>
      (a.seq || Infinity) - (b.seq || Infinity) || (a.localAt || 0) - (b.localAt || 0));
    for (const m of msgs) {
      const li = document.createElement("li");
      li.className = "msg " + (m.fromUserId === me ? "mine" : "theirs")
        + (m.recalled ? " recalled-msg" : "");
      if (Array.isArray(m.mentions) && m.mentions.includes(me)) li.classList.add("mention");
      li.dataset.msgId = m.msgId;
      if (m.fromUserId !== me) {
        const who = document.createElement("div");
        who.className = "msg-from muted";
        who.textContent = app.name(m.fromUserId);
        li.appendChild(who);
      }
      const body = document.createElement("div");
      body.className = "bubble";
      const file = !m.recalled && app.renderFile ? app.renderFile(m) : null;   // files.js: images inline
      if (m.recalled) {
        const text = document.createElement("span");
        text.className = "text recalled-text";
        text.textContent = m.fromUserId === me ? "You recalled this message"
          : `${memberName(g, m.fromUserId)} recalled this message`;
        body.append(text);
      } else if (file) body.append(file);
      else body.textContent = m.content;
      if (m.edited && !m.recalled) {
        const edited = document.createElement("span");
        edited.className = "edited";
        edited.textContent = " edited";
        body.append(edited);
      }
      li.appendChild(body);
      if (m.fromUserId === me) {
        const tick = document.createElement("span");
        tick.className = "tick";
        tick.textContent = m.status === "failed" ? `failed: ${m.error}` : m.status === "pending" ? "…" : "✓";
        li.appendChild(tick);
        if (Number.isInteger(m.seq) && !m.recalled) li.appendChild(messageActions(m));
      }
      ol.appendChild(li);
    }
    const box = $("group-messages");
    box.scrollTop = box.scrollHeight;
  }

  function show(node, visible) { node.hidden = !visible; }

  async function open(gid) {
    app.closeConversation();
    current = gid;
    show($("group-conversation"), true);
    show($("conversation"), false);
    document.body.classList.add("conv-open");
    const g = group(gid);
    render();
    renderTyping();
    try {
      const d = await app.api("GET", `/api/groups/${gid}/messages?limit=${PAGE_SIZE}`);
      for (const m of d.messages || []) merge(g, m);
    } catch (e) { console.warn("group history", e); }
    markRead(g);
    render();
    loadMembers(gid);
  }

  // -- members and administration ----------------------------------------------------------
  async function loadMembers(gid) {
    const g = group(gid);
    try {
      const d = await app.api("GET", `/api/groups/${gid}/members?limit=200`);
      g.members = new Map((d.members || []).map((m) => [m.userId, m]));
    } catch (e) { console.warn("group members", e); return; }
    if (current === gid) renderMembers();
  }

  function myRole(g) {
    const me = g.members.get(app.session().userId);
    return me ? me.role : "member";
  }

  function memberName(g, id) {
    const m = g.members.get(id);
    return (m && m.username) || app.name(id);
  }

  function renderMembers() {
    if (current == null) return;
    const g = group(current);
    const role = myRole(g), me = app.session().userId;
    const admin = role === "owner" || role === "admin";
    show($("group-rename-form"), admin);
    show($("group-dismiss"), role === "owner");
    show($("group-mute-length"), admin);
    const ul = $("group-member-list");
    ul.textContent = "";
    for (const m of g.members.values()) {
      const li = document.createElement("li");
      li.dataset.userId = String(m.userId);
      const name = document.createElement("span");
      name.className = "member-name";
      name.textContent = m.username || `#${m.userId}`;
      li.appendChild(name);
      const badge = document.createElement("span");
      badge.className = `role-badge ${m.role}`;
      badge.textContent = m.role;
      li.appendChild(badge);
      if (m.mutedUntil && m.mutedUntil > Date.now()) {
        const mb = document.createElement("span");
        mb.className = "muted-badge";
        mb.textContent = `muted until ${new Date(m.mutedUntil).toLocaleTimeString()}`;
        li.appendChild(mb);
      }
      // who may act on whom: the owner on anyone else, an admin on plain members
      const allowed = m.userId !== me && m.role !== "owner" &&
        (role === "owner" || (role === "admin" && m.role === "member"));
      if (allowed && role === "owner") {
        li.appendChild(button(m.role === "admin" ? "Remove admin" : "Make admin", "role",
          () => administer("PUT", `/members/${m.userId}/role`,
            { role: m.role === "admin" ? "member" : "admin" })));
      }
      if (allowed) {
        const muted = m.mutedUntil && m.mutedUntil > Date.now();
        li.appendChild(button(muted ? "Unmute" : "Mute", "mute",
          () => administer("POST", `/members/${m.userId}/mute`,
            { seconds: muted ? 0 : Number($("group-mute-seconds").value) })));
        li.appendChild(button("Remove", "kick", () => administer("DELETE", `/members/${m.userId}`)));
      }
      ul.appendChild(li);
    }
  }

  // a button of the page's: its label, data-action and click handler (a link by default)
  function button(label, action, onClick, className = "link small") {
    const b = document.createElement("button");
    b.type = "button";
    b.className = className;
    b.dataset.action = action;
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  async function administer(method, path, body) {
    const gid = current;
    try {
      await app.api(method, `/api/groups/${gid}${path}`, body);
    } catch (err) { status(err.message, true); return; }
    // the group_changed frame updates every member's page, this one included
  }

  function forget(gid, why) {
    if (current === gid) close();
    groups.delete(gid);
    render();
    status(why, true);
  }

  function onChanged(d) {
    const g = groups.get(d.groupId);
    if (!g) return;
    const me = app.session().userId;
    const by = memberName(g, d.byUserId);
    if (d.change === "dismiss") { forget(d.groupId, `${g.name} was dismissed by ${by}.`); return; }
    if (d.change === "kick" && d.userId === me) {
      forget(d.groupId, `${by} removed you from ${g.name}.`); return;
    }
    if (d.change === "rename" && typeof d.name === "string") g.name = d.name;
    const m = g.members.get(d.userId);
    if (d.change === "kick") g.members.delete(d.userId);
    if (m && d.change === "role") m.role = d.role;
    if (m && (d.change === "mute" || d.change === "unmute")) m.mutedUntil = d.until || 0;
    if (d.userId === me && d.change === "mute" && current === d.groupId) {
      status(`${by} muted you until ${new Date(d.until).toLocaleTimeString()}.`, true);
    }
    render();
    if (current === d.groupId) renderMembers();
  }

  function mentionsIn(g, text) {     // members named as @username in the text
    const found = [];
    const lower = text.toLowerCase();
    for (const m of g.members.values()) {
      if (m.username && lower.includes(`@${m.username.toLowerCase()}`)) found.push(m.userId);
    }
    return found.slice(0, 50);
  }

  function close() {
    if (current == null) return;
    current = null;
    show($("group-conversation"), false);
    show($("conversation"), true);
    render();
  }

  function markRead(g) {
    const seq = Math.max(held(g), g.lastSeq);
    if (seq > g.readSeq && wsSend("group_read", { groupId: g.groupId, seq })) g.readSeq = seq;
    g.unread = 0;
    g.mentions = 0;
  }

  function send(text) {
    const g = group(current);
    const msgId = app.uuid4();
    const mentions = mentionsIn(g, text);
    const m = { msgId, fromUserId: app.session().userId, groupId: g.groupId, content: text,
      status: "pending", localAt: Date.now(), mentions };
    merge(g, m);
    pending.set(msgId, m);
    const frame = { groupId: g.groupId, msgId, content: text };
    if (mentions.length) frame.mentions = mentions;
    if (!wsSend("groupchat", frame)) {
      failed(msgId, "not connected");
    }
    renderMessages();
  }

  function failed(msgId, why) {
    const m = pending.get(msgId);
    if (!m) return false;
    pending.delete(msgId);
    const g = group(m.groupId);
    merge(g, { ...m, status: "failed", error: why });
    if (current === m.groupId) renderMessages();
    return true;
  }

  // requestIds "g-…" are the page's group syncs; changedSince: what was recalled or edited
  // since the last one (0 at first: every change of the messages held)
  function sendSync(ranges) {
    if (!ranges.length) return;
    syncIds += 1;
    wsSend("sync", { requestId: `g-${syncIds}`, conversations: ranges.slice(0, 100), changedSince });
  }

  // Typing in a group: a signal, never stored (docs/protocol.md "Typing")
  function renderTyping() {
    const who = current == null ? [] : [...(typers.get(current) || new Map()).keys()];
    const el = $("group-typing");
    el.textContent = who.length
      ? `${who.map((id) => app.name(id)).join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
    show(el, who.length > 0);
  }

  function stopTyping(gid, uid) {
    const t = typers.get(gid);
    if (!t || !t.has(uid)) return;
    clearTimeout(t.get(uid));
    t.delete(uid);
    if (gid === current) renderTyping();
  }

  function onTyping(d) {
    if (!Number.isInteger(d.fromUserId)) return;
    if (d.state !== "typing") { stopTyping(d.groupId, d.fromUserId); return; }
    let t = typers.get(d.groupId);
    if (!t) { t = new Map(); typers.set(d.groupId, t); }
    clearTimeout(t.get(d.fromUserId));
    t.set(d.fromUserId, setTimeout(() => stopTyping(d.groupId, d.fromUserId), TYPING_SHOW_MS));
    if (d.groupId === current) renderTyping();
  }

  function sendTyping() {
    if (current == null || !$("group-input").value.trim()) return;   // wsSend is false when offline
    const now = Date.now();
    if (typingGroup === current && now - typingSentAt < TYPING_SEND_MS) return;
    if (wsSend("typing", { groupId: current, state: "typing" })) {
      typingGroup = current;
      typingSentAt = now;
    }
  }

  // the group frames, as the client's typed events
  function listen(client) {
    client.on("typing", (d) => { if (Number.isInteger(d.groupId)) onTyping(d); });
    client.on("groupchat", (d) => {
      const me = app.session().userId;
      stopTyping(d.groupId, d.fromUserId);   // the message it was typing has arrived
      const known = groups.has(d.groupId);
      const g = group(d.groupId);
      if (merge(g, d) && d.fromUserId !== me) {
        if (current === d.groupId && document.visibilityState === "visible") markRead(g);
        else {
          g.unread += 1;
          if (Array.isArray(d.mentions) && d.mentions.includes(me)) g.mentions += 1;
        }
      }
      if (!known || g.name.startsWith("Group #")) refresh();
      render();
    });
    client.on("ack", (d) => {
      if (!Number.isInteger(d.groupId)) return;
      const m = pending.get(d.msgId);
      if (!m) return;
      pending.delete(d.msgId);
      const g = group(d.groupId);
      merge(g, { ...m, status: "sent", seq: d.seq, createdAt: d.timestamp });
      if (current === d.groupId) { markRead(g); renderMessages(); }   // my own is read
    });
    client.on("group_read", (d) => {
      if (d.userId !== app.session().userId) return;
      const g = group(d.groupId);
      g.readSeq = Math.max(g.readSeq, d.seq);
      g.unread = 0;
      render();
    });
    client.on("group_unread", (d) => {
      syncRounds = 0;
      const ranges = [];
      for (const x of d.groups) {
        const g = group(x.groupId);
        g.name = x.name || g.name;
        g.lastSeq = Math.max(g.lastSeq, x.lastSeq || 0);
        g.readSeq = Math.max(g.readSeq, x.readSeq || 0);
        const from = Math.max(held(g), g.readSeq);
        // a group of which messages are shown is synced too: its changes since the last sync
        if (g.lastSeq > from || held(g) > 0) ranges.push({ groupId: g.groupId, afterSeq: from });
        g.unread = Math.max(0, g.lastSeq - g.readSeq);
        g.mentions = Number.isInteger(x.mentions) ? x.mentions : 0;
      }
      sendSync(ranges);
      render();
    });
    client.on("sync_messages", (d) => {
      if (!Number.isInteger(d.groupId)) return;
      const g = group(d.groupId);
      for (const m of d.messages) merge(g, m);
      if (current === d.groupId) markRead(g);
      render();
    });
    client.on("sync_complete", (d) => {      // the peers' entries are the client's
      if (typeof d.requestId === "string" && d.requestId.startsWith("g-")
          && Number.isInteger(d.serverTime)) changedSince = d.serverTime;
      const more = d.conversations.filter((c) => c && c.hasMore && Number.isInteger(c.groupId));
      if (more.length && ++syncRounds <= SYNC_ROUNDS) {
        sendSync(more.map((c) => ({ groupId: c.groupId, afterSeq: c.lastSeq })));
      }
    });
    client.on("error", (d) => {
      if (d.msgId == null) return;
      if (changing.delete(d.msgId)) {        // a refused recall or edit of mine
        status(d.code === ErrorCode.TOO_LATE ? "It is too late to change that message."
          : d.code === ErrorCode.RECALLED ? "That message was recalled."
          : d.code === ErrorCode.NOT_SUPPORTED ? "This server cannot change group messages."
          : (d.message || d.code), true);
        return;
      }
      failed(d.msgId, d.code === ErrorCode.FORBIDDEN ? "you are not in this group"
        : d.code === ErrorCode.MUTED ? "you are muted in this group" : (d.message || d.code));
    });
    client.on("group_changed", onChanged);
    client.on("message_recalled", (d) => onChangedMessage(d, (m) => {
      m.recalled = true; m.content = ""; m.mentions = [];
    }));
    client.on("message_edited", (d) => onChangedMessage(d, (m) => {
      if (!m.recalled) { m.edited = true; m.content = d.content; }
    }));
  }

  function init() {
    $("new-group-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const input = $("new-group-name");
      const name = input.value.trim();
      if (!name) return;
      try {
        const g = await app.api("POST", "/api/groups", { name });
        input.value = "";
        group(g.groupId).name = g.name;
        render();
        open(g.groupId);
      } catch (err) { status(err.message, true); }
    });
    $("group-invite-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const input = $("group-invite-input");
      const name = input.value.trim().toLowerCase();
      const id = app.friendId(name);
      if (id == null) { status(`Invite a friend: “${input.value.trim()}” is not one.`, true); return; }
      try {
        await app.api("POST", `/api/groups/${current}/members`, { userIds: [id] });
        input.value = "";
        status(`${app.name(id)} was added.`, false);
      } catch (err) { status(err.message, true); }
    });
    $("group-leave").addEventListener("click", async () => {
      const gid = current;
      try {
        await app.api("POST", `/api/groups/${gid}/leave`);
        close();
        groups.delete(gid);
        render();
      } catch (err) { status(err.message, true); }
    });
    $("group-members-button").addEventListener("click", () => {
      const panel = $("group-admin");
      show(panel, panel.hidden);
      $("group-members-button").setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden && current != null) loadMembers(current);
    });
    $("group-rename-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const name = $("group-rename-input").value.trim();
      if (!name) return;
      $("group-rename-input").value = "";
      administer("PATCH", "", { name });
    });
    $("group-dismiss").addEventListener("click", () => administer("DELETE", ""));
    $("group-pin").addEventListener("click", () => toggleFlag("pin"));
    $("group-mute").addEventListener("click", () => toggleFlag("mute"));
    $("group-back").addEventListener("click", () => { close(); document.body.classList.remove("conv-open"); });
    const input = $("group-input");
    input.addEventListener("input", sendTyping);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("group-composer").requestSubmit();
      }
    });
    $("group-composer").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = input.value.replace(/\s+$/, "");
      if (!text.trim() || current == null) return;
      send(text);
      input.value = "";
      input.focus();
    });
  }

  function status(text, error) {
    const s = $("group-status");
    s.textContent = text;
    s.className = "add-friend-status " + (error ? "error" : "ok");
    show(s, true);
    setTimeout(() => show(s, false), 6000);
  }

  init();
  return { listen, refresh, close, setFlags, onFlags,
    reset: () => { groups.clear(); pending.clear(); changing.clear(); current = null; changedSince = 0; } };
}
