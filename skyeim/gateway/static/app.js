// SkyeIM web chat page: plain JavaScript modules, no build step, no external resources.
//
// Talks to the gateway it is served by: the REST API under /api (register, login,
// friends, history) and one WebSocket at /ws through skyeim-client.js, the same
// client module a team's own front end uses (reconnect, outbox, sync, acks, typed
// events); this file is the page: its DOM, its conversations, its banners.
// Every piece of user content reaches the DOM through textContent, never as HTML.
import { CloseCode, ErrorCode, SkyeClient, State, fileContent, fileContentType, uploadFile,
  uuid4 } from "./skyeim-client.js";
import { createFiles } from "./files.js";
import { createGroups } from "./groups.js";
import { createRequests } from "./requests.js";

const PAGE_SIZE = 50;            // history page
const FRIENDS_REFRESH_MS = 30000;
const STATUS_RANK = { pending: 0, failed: 0, sent: 1, delivered: 2, read: 3 };
const TYPE_LABEL = { 2: "Image", 3: "File", 4: "Voice" };
const TYPING_SEND_MS = 3000;     // while typing, tell the peer at most this often
const TYPING_SHOW_MS = 5000;     // "… is typing" stays this long after the last signal
const NOTICE_SHOW_MS = 10000;    // a server notice stays this long (or until clicked)
const NOTICES_SHOWN = 3;         // at most this many at once; the oldest goes first

const $ = (id) => document.getElementById(id);

const state = {
  session: null,           // {token, userId, username, expiresAt}
  client: null,            // the SkyeClient of this session
  friends: new Map(),      // userId -> {userId, username, online, lastSeen}
  convs: new Map(),        // peerId -> conversation (see getConv)
  mine: new Map(),         // msgId -> my message object (for acks and read receipts)
  convList: new Map(),     // peerId -> item of GET /api/conversations (order, unread, muted, pinned)
  current: null,           // peerId of the open conversation
  localSeq: 0,             // orders my not-yet-acked messages
  timers: { countdown: null, friends: null },
  typingFrom: new Map(),   // peerId -> timer hiding its "is typing" (a signal, never stored)
  typingSentAt: 0,         // when we last sent "typing" (throttle)
  typingTo: null,          // peerId we last told "typing"
  changing: new Set(),     // msgIds of my recalls/edits awaiting their answer (an error is a toast)
};

const live = () => Boolean(state.client && state.client.live);

// ---------------------------------------------------------------------------
// Small helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function show(node, visible) { node.hidden = !visible; }

// Put `nodes` into `list` in this order, moving only what moved: an element that
// stays keeps its focus and a reader's text selection
function reconcile(list, nodes) {
  let cursor = list.firstChild;
  for (const node of nodes) {
    if (node === cursor) { cursor = cursor.nextSibling; continue; }
    list.insertBefore(node, cursor);
  }
  while (cursor) { const next = cursor.nextSibling; cursor.remove(); cursor = next; }
}

function timeOf(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function dayOf(ms) {
  const d = new Date(ms);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "short", year: "numeric", month: "short", day: "numeric" });
}

function visible() { return document.visibilityState === "visible"; }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.session) headers.Authorization = `Bearer ${state.session.token}`;
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "network", "Cannot reach the server.");
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data && data.code,
      (data && data.message) || `${resp.status} ${resp.statusText}`);
    if (resp.status === 401 && state.session && !path.startsWith("/api/log")) {
      signOut("Your session has ended. Please sign in again.");
    }
    throw err;
  }
  return data;
}

const files = createFiles({ api });

// ---------------------------------------------------------------------------
// Session (sessionStorage: one login per tab; the client keeps its outbox there too)

const SESSION_KEY = "skyeim.session";
const outboxKey = () => `skyeim.outbox.${state.session.userId}`;

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (s && typeof s.token === "string" && Number.isInteger(s.userId)) return s;
  } catch (e) { /* ignore */ }
  return null;
}

// ---------------------------------------------------------------------------
// Login view

function showLogin(message, isError) {
  show($("chat-view"), false);
  show($("login-view"), true);
  const box = $("login-error");
  box.textContent = message || "";
  box.classList.toggle("info", !isError);
  show(box, Boolean(message));
  $("login-password").value = "";
  (($("login-username").value) ? $("login-password") : $("login-username")).focus();
}

function credentials() {
  return { username: $("login-username").value.trim(), password: $("login-password").value };
}

async function doLogin(register) {
  const { username, password } = credentials();
  const box = $("login-error");
  box.classList.remove("info");
  if (!username || !password) {
    box.textContent = "Enter a username and a password.";
    show(box, true);
    return;
  }
  $("login-button").disabled = $("register-button").disabled = true;
  try {
    if (register) await api("POST", "/api/register", { username, password });
    const r = await api("POST", "/api/login", { username, password });
    state.session = { token: r.token, userId: r.userId, username, expiresAt: r.expiresAt };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
    show(box, false);
    startChat();
  } catch (e) {
    let text = e.message;
    if (e.status === 401) text = "Wrong username or password.";
    else if (e.status === 409) text = "That username is taken. Pick another one.";
    box.textContent = text;
    show(box, true);
  } finally {
    $("login-button").disabled = $("register-button").disabled = false;
  }
}

// forget: the user signed out; otherwise (expired, refused) unsent messages stay in
// sessionStorage and go out when the same user signs in again in this tab.
function signOut(message, forget = false) {
  groups.close();
  groups.reset();
  requests.reset();
  if (state.client) state.client.close();
  for (const t of Object.values(state.timers)) { clearTimeout(t); clearInterval(t); }
  if (state.session) {
    if (forget) sessionStorage.removeItem(outboxKey());
    sessionStorage.removeItem(SESSION_KEY);
    $("login-username").value = state.session.username || "";
  }
  Object.assign(state, {
    session: null, client: null, current: null,
    friends: new Map(), convs: new Map(), mine: new Map(), convList: new Map(),
  });
  hideBanner();
  document.body.classList.remove("disconnected", "conv-open");
  $("friend-list").replaceChildren();
  $("message-list").replaceChildren();
  $("notices").replaceChildren();
  friendNodes.clear();
  document.title = "SkyeIM";
  showLogin(message, false);
}

// ---------------------------------------------------------------------------
// Chat view

function startChat() {
  show($("login-view"), false);
  show($("chat-view"), true);
  $("me-name").textContent = state.session.username || `User #${state.session.userId}`;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const client = new SkyeClient({
    url: `${proto}//${location.host}/ws`, token: state.session.token, platform: "web",
    storage: sessionStorage, storageKey: outboxKey(),
  });
  state.client = client;
  listen(client);
  for (const item of client.outbox) {         // unsent in an earlier visit: pending again
    mergeMessage(getConv(item.toUserId), {
      msgId: item.msgId, fromUserId: state.session.userId, toUserId: item.toUserId,
      content: item.content, contentType: item.contentType, createdAt: item.createdAt,
      status: "pending",
    });
  }
  renderFriends();
  renderConversation();
  refreshFriends();
  groups.refresh();
  refreshConversations();
  requests.refresh();
  client.connect();
  state.timers.friends = setInterval(() => { if (visible()) refreshFriends(); }, FRIENDS_REFRESH_MS);
}

function getConv(peerId) {
  let c = state.convs.get(peerId);
  if (!c) {
    c = {
      peerId,
      msgs: new Map(),        // "fromUserId:msgId" -> message
      nodes: new Map(),       // the same keys (and "day:...") -> rendered element
      unread: new Set(),      // msgIds from the peer that we have not yet sent "read" for
      historyLoaded: false,
      stale: false,           // reload the newest page when opened (after a reconnect)
      hasMore: true,
      oldestSeq: null,
      loading: false,
      historyError: "",
    };
    state.convs.set(peerId, c);
  }
  return c;
}

// Every message with a seq tells the client what this conversation holds (sync asks after it).
function mergeMessage(conv, m) {
  const key = `${m.fromUserId}:${m.msgId}`;
  let cur = conv.msgs.get(key);
  if (m.seq != null) state.client.track(conv.peerId, m.seq);
  if (m.deleted) {                  // deleted for me (on another device): not shown
    if (cur) conv.msgs.delete(key);
    return null;
  }
  if (!cur) {
    cur = {
      key, msgId: m.msgId, fromUserId: m.fromUserId, toUserId: m.toUserId,
      content: m.content, contentType: m.contentType || 1,
      createdAt: m.createdAt, seq: m.seq == null ? null : m.seq,
      status: m.status || "sent", local: ++state.localSeq, error: "",
      recalled: Boolean(m.recalled), edited: Boolean(m.edited),
    };
    conv.msgs.set(key, cur);
    if (cur.fromUserId === state.session.userId) state.mine.set(cur.msgId, cur);
    return cur;
  }
  if (m.seq != null) cur.seq = m.seq;
  if (m.createdAt != null && cur.seq != null) cur.createdAt = m.createdAt;
  if (m.status && STATUS_RANK[m.status] > STATUS_RANK[cur.status]) cur.status = m.status;
  if (m.recalled) { cur.recalled = true; cur.content = ""; }
  else if (m.edited && !cur.recalled) { cur.edited = true; cur.content = m.content; }
  return cur;
}

function friendName(id) {
  const f = state.friends.get(id);
  return (f && f.username) || `User #${id}`;
}

let friendsSoon = null;     // a pending refresh (debounced)
let friendsAsked = 0;      // requests are numbered: an answer older than the last applied is dropped
let friendsApplied = 0;

async function refreshFriends() {
  if (!state.session) return;
  const session = state.session;
  const n = ++friendsAsked;
  let body;
  try {
    body = await api("GET", "/api/friends");
  } catch (e) {
    if (e.status !== 401 && live()) {   // try again (a reconnect refreshes anyway)
      clearTimeout(friendsSoon);
      friendsSoon = setTimeout(refreshFriends, 5000);
    }
    return;
  }
  if (session !== state.session || n < friendsApplied) return;
  friendsApplied = n;
  const next = new Map();
  for (const f of body.friends || []) {
    const old = state.friends.get(f.userId);
    next.set(f.userId, {
      userId: f.userId, username: f.username || (old && old.username) || null,
      online: Boolean(f.online), lastSeen: old ? old.lastSeen : null,
    });
  }
  state.friends = next;
  renderFriends();
  renderConvHead();
}

function refreshFriendsSoon() {
  clearTimeout(friendsSoon);
  friendsSoon = setTimeout(refreshFriends, 300);
}

// A friend_added / friend_removed frame is newer than any /api/friends answer still on
// its way: such an answer is dropped (it would undo the change), and a fresh one asked for.
function friendsChanged() {
  friendsApplied = friendsAsked + 1;
  refreshFriendsSoon();
}

function sortedMessages(conv) {
  return [...conv.msgs.values()].sort((a, b) => {
    if (a.seq != null && b.seq != null) return a.seq - b.seq;
    if (a.seq != null) return -1;           // unacked messages go last, in the order typed
    if (b.seq != null) return 1;
    return a.local - b.local;
  });
}

function lastMessage(conv) {      // the message sortedMessages would put last
  let best = null;
  for (const m of conv.msgs.values()) {
    if (!best) { best = m; continue; }
    const later = (m.seq == null) === (best.seq == null)
      ? (m.seq == null ? m.local > best.local : m.seq > best.seq)
      : m.seq == null;
    if (later) best = m;
  }
  return best;
}

function presenceText(f) {
  if (!f) return "";
  if (f.online) return "online";
  return f.lastSeen ? `last seen ${timeOf(f.lastSeen)}` : "offline";
}

const friendNodes = new Map();   // userId -> {li, btn, sig}

function renderFriends() {
  const ids = new Set(state.friends.keys());
  for (const [id, c] of state.convs) if (c.msgs.size) ids.add(id);   // strangers who wrote
  for (const id of state.convList.keys()) ids.add(id);                 // the server's list
  const entries = [...ids].map((id) => ({ id, f: state.friends.get(id), c: state.convs.get(id),
    meta: state.convList.get(id) }));
  // the conversation list's order: pinned first, then newest first, then by name
  for (const e of entries) e.at = lastActivity(e.c, e.meta);
  entries.sort((a, b) => (Number(Boolean(b.meta && b.meta.pinned)) - Number(Boolean(a.meta && a.meta.pinned)))
    || b.at - a.at
    || friendName(a.id).localeCompare(friendName(b.id), undefined, { sensitivity: "base" })
    || a.id - b.id);
  const items = entries.map(({ id, f, c, meta }) => {
    const last = c ? lastMessage(c) : null;
    const serverLast = meta && meta.lastMessage;
    const sub = last ? (last.fromUserId === state.session.userId ? "You: " : "") + last.content
      : serverLast ? (serverLast.fromUserId === state.session.userId ? "You: " : "") + serverLast.content
      : (f ? presenceText(f) : "");
    const n = unreadOf(c, meta);
    const pinned = Boolean(meta && meta.pinned);
    const muted = Boolean(meta && meta.muted);
    const online = Boolean(f && f.online);
    const active = id === state.current;
    const sig = JSON.stringify([friendName(id), online, active, sub, n, f ? presenceText(f) : "",
      pinned, muted]);
    let node = friendNodes.get(id);
    if (!node) {   // the button element stays (and keeps the focus) while its content changes
      const li = el("li");
      const btn = el("button", "friend");
      btn.type = "button";
      btn.dataset.userId = String(id);
      btn.addEventListener("click", () => openConversation(id));
      li.append(btn);
      node = { li, btn, sig: "" };
      friendNodes.set(id, node);
    }
    if (node.sig !== sig) {
      node.sig = sig;
      const btn = node.btn;
      btn.dataset.online = String(online);
      btn.dataset.pinned = String(pinned);
      btn.dataset.muted = String(muted);
      btn.classList.toggle("active", active);
      if (active) btn.setAttribute("aria-current", "true"); else btn.removeAttribute("aria-current");
      const dot = el("span", `dot${online ? " online" : ""}`);
      dot.title = f ? presenceText(f) : "not a friend";
      const body = el("span", "friend-body");
      body.append(el("span", "friend-name", friendName(id)), el("span", "friend-sub", sub));
      const parts = [dot, body];
      if (pinned) parts.push(Object.assign(el("span", "conv-flag", "📌"), { title: "pinned" }));
      if (muted) parts.push(Object.assign(el("span", "conv-flag", "🔕"), { title: "Muted" }));
      if (n > 0) {
        const badge = el("span", muted ? "badge muted" : "badge", n > 99 ? "99+" : n);
        badge.setAttribute("aria-label", `${n} unread`);
        parts.push(badge);
      }
      btn.replaceChildren(...parts);
    }
    return node.li;
  });
  reconcile($("friend-list"), items);
  for (const id of friendNodes.keys()) if (!ids.has(id)) friendNodes.delete(id);
  show($("no-friends"), items.length === 0);
  let total = 0;
  for (const { id, c, meta } of entries) if (!(meta && meta.muted)) total += unreadOf(c, meta);
  document.title = total ? `(${total}) SkyeIM` : "SkyeIM";
}

// ---------------------------------------------------------------------------
// The conversation list (GET /api/conversations): order, unread counts, mute and pin

const CONV_PAGES = 5;             // pages of 200 fetched (the 1000 newest conversations)

// Unread: what this page counted itself once the conversation is loaded or a chat came;
// before that, the server's count.
function unreadOf(c, meta) {
  const local = c ? c.unread.size : 0;
  if (local || (c && c.historyLoaded) || !meta || meta.kind !== "chat") return local;
  return meta.unread || 0;
}

function lastActivity(c, meta) {
  const last = c ? lastMessage(c) : null;
  return Math.max((last && last.createdAt) || 0, (meta && meta.lastAt) || 0);
}

let convAsked = 0;
async function refreshConversations() {
  const session = state.session;
  const n = ++convAsked;
  const next = new Map();
  const groupItems = [];          // their flags are groups.js's
  let cursor = null;
  try {
    for (let i = 0; i < CONV_PAGES; i += 1) {
      const q = new URLSearchParams({ limit: "200" });
      if (cursor) q.set("before", cursor);
      const body = await api("GET", `/api/conversations?${q}`);
      for (const item of body.items || []) {
        if (item.kind === "chat" && Number.isInteger(item.peerId)) next.set(item.peerId, item);
        else if (item.kind === "group") groupItems.push(item);
      }
      cursor = body.nextCursor;
      if (!cursor) break;
    }
  } catch (e) {
    return;                       // no list (not_supported, or offline): the page works without it
  }
  if (session !== state.session || n !== convAsked) return;
  state.convList = next;
  groups.setFlags(groupItems);
  renderFriends();
  renderConvHead();
}

function onConversationUpdated(d) {
  if (Number.isInteger(d.groupId)) { groups.onFlags(d); return; }
  if (!Number.isInteger(d.peerId)) return;
  const meta = state.convList.get(d.peerId)
    || { kind: "chat", peerId: d.peerId, unread: 0, lastAt: 0, lastMessage: null };
  meta.muted = Boolean(d.muted);
  meta.pinned = Boolean(d.pinned);
  state.convList.set(d.peerId, meta);
  renderFriends();
  renderConvHead();
}

async function toggleFlag(what) {
  const id = state.current;
  if (id == null) return;
  const meta = state.convList.get(id) || {};
  // the API's field for each toggle (backquoted: `muted` is a field here, not ErrorCode.MUTED)
  const FLAG = { pin: `pinned`, mute: `muted` };
  const field = FLAG[what];
  try {
    const answer = await api("POST", `/api/conversations/${what}`, { peerId: id, [field]: !meta[field] });
    onConversationUpdated(answer);
  } catch (e) {
    onNotice({ event: "conversation", data: e.message || "That did not work." });
  }
}

function renderConvHead() {
  const id = state.current;
  if (id == null) return;
  const f = state.friends.get(id);
  $("conv-name").textContent = friendName(id);
  $("conv-presence").textContent = f ? presenceText(f) : "not in your friends";
  $("conv-dot").className = `dot${f && f.online ? " online" : ""}`;
  $("conv-head").dataset.online = String(Boolean(f && f.online));
  const typing = state.typingFrom.has(id);
  $("conv-typing").textContent = typing ? `${friendName(id)} is typing…` : "";
  show($("conv-typing"), typing);
  show($("conv-presence"), !typing);
  const meta = state.convList.get(id) || {};
  $("conv-pin").textContent = meta.pinned ? "Unpin" : "Pin";
  $("conv-pin").setAttribute("aria-pressed", String(Boolean(meta.pinned)));
  $("conv-mute").textContent = meta.muted ? "Unmute" : "Mute";
  $("conv-mute").setAttribute("aria-pressed", String(Boolean(meta.muted)));
}

function renderConversation() {
  const open = state.current != null;
  document.body.classList.toggle("conv-open", open);
  show($("no-conversation"), !open);
  show($("conv-head"), open);
  show($("messages"), open);
  show($("composer"), open);
  if (!open) return;
  renderConvHead();
  renderMessages("bottom");
}

function tickFor(m) {
  const t = el("span", `tick ${m.status}`);
  t.dataset.status = m.status;
  if (m.status === "pending") { t.title = "Sending…"; t.setAttribute("aria-label", "sending"); }
  else if (m.status === "failed") {
    t.textContent = "!";
    t.title = `Not sent: ${m.error}. Click to try again.`;
    t.setAttribute("role", "button");
    t.addEventListener("click", () => retry(m));
  } else {
    t.textContent = m.status === "sent" ? "✓" : "✓✓";
    t.title = m.status;
    t.setAttribute("aria-label", m.status);
  }
  return t;
}

function messageNode(conv, m) {
  const mineMsg = m.fromUserId === state.session.userId;
  const sig = [m.status, m.seq, m.createdAt, m.error, m.recalled, m.edited, m.content].join("|");
  let node = conv.nodes.get(m.key);
  if (node && node.sig === sig) return node.li;
  if (!node) {
    node = { li: el("li", `msg ${mineMsg ? "mine" : "theirs"}`), sig: "" };
    node.li.dataset.msgId = m.msgId;
    conv.nodes.set(m.key, node);
  }
  node.sig = sig;
  const li = node.li;
  if (m.seq != null) li.dataset.seq = String(m.seq);
  if (mineMsg) li.dataset.status = m.status;
  const bubble = el("div", "bubble");
  li.classList.toggle("recalled-msg", m.recalled);
  const file = m.recalled ? null : files.render(m);   // an image inline, a file as a link
  if (m.recalled) {
    bubble.append(el("span", "text recalled-text",
      mineMsg ? "You recalled this message" : `${friendName(m.fromUserId)} recalled this message`));
  } else if (file) {
    bubble.append(file);
  } else {
    const label = TYPE_LABEL[m.contentType];
    if (label) bubble.append(el("span", "kind", `${label}: `));
    bubble.append(el("span", "text", m.content));
  }
  const meta = el("span", "meta");
  if (m.edited && !m.recalled) meta.append(el("span", "edited", "edited"));
  meta.append(el("span", "time", m.createdAt ? timeOf(m.createdAt) : ""));
  if (mineMsg) meta.append(tickFor(m));
  bubble.append(meta);
  const parts = [bubble];
  if (m.seq != null && !m.recalled) parts.push(messageActions(m, mineMsg));
  if (m.status === "failed" && m.error) parts.push(el("div", "msg-error", `Not sent: ${m.error}`));
  li.replaceChildren(...parts);
  return li;
}

// Recall and edit (my own messages, within the gateway's windows) and delete for me.
function messageActions(m, mineMsg) {
  const row = el("div", "msg-actions");
  const action = (name, label, fn) => {
    const b = el("button", "msg-action", label);
    b.type = "button";
    b.dataset.action = name;
    b.addEventListener("click", fn);
    row.append(b);
  };
  if (mineMsg) {
    action("edit", "Edit", () => {
      const text = window.prompt("Edit message", m.content);
      if (text && text !== m.content) { state.changing.add(m.msgId); state.client.edit(m.msgId, text); }
    });
    action("recall", "Recall", () => { state.changing.add(m.msgId); state.client.recall(m.msgId); });
  }
  action("delete", "Delete for me", () => {
    const peer = mineMsg ? m.toUserId : m.fromUserId;
    state.client.deleteForMe(peer, [m.msgId]);
  });
  return row;
}

function changedMessage(d, apply) {
  if (Number.isInteger(d.groupId)) return;      // a group message's: groups.js's
  const me = state.session.userId;
  const peer = d.fromUserId === me ? d.toUserId : d.fromUserId;
  const conv = getConv(peer);
  const cur = conv.msgs.get(`${d.fromUserId}:${d.msgId}`);
  state.changing.delete(d.msgId);
  if (!cur) return;
  apply(cur);
  if (state.current === peer) renderMessages("auto");
}

function onRecalled(d) {
  changedMessage(d, (m) => { m.recalled = true; m.content = ""; });
}

function onEdited(d) {
  changedMessage(d, (m) => { if (!m.recalled) { m.edited = true; m.content = d.content; } });
}

function onDeletedForMe(d) {
  const conv = getConv(d.peerId);
  const me = state.session.userId;
  for (const id of d.msgIds) {
    for (const from of [me, d.peerId]) conv.msgs.delete(`${from}:${id}`);
  }
  if (state.current === d.peerId) renderMessages("auto");
}

// mode: "bottom" (scroll to the end), "prepend" (keep what is on screen in place),
// "auto" (follow the end if the reader is there, else stay)
function renderMessages(mode = "auto") {
  if (state.current == null) return;
  const conv = getConv(state.current);
  const box = $("messages");
  const prevHeight = box.scrollHeight;
  const prevTop = box.scrollTop;
  const nearBottom = prevHeight - prevTop - box.clientHeight < 80;
  // Keyed rendering: a message keeps its element (and a reader's text selection);
  // only a message whose state changed is redrawn.
  const rows = [];
  let lastDay = null;
  for (const m of sortedMessages(conv)) {
    const day = dayOf(m.createdAt || Date.now());
    if (day !== lastDay) {
      let d = conv.nodes.get(`day:${day}`);
      if (!d) { d = el("li", "day", day); conv.nodes.set(`day:${day}`, d); }
      rows.push(d);
      lastDay = day;
    }
    rows.push(messageNode(conv, m));
  }
  reconcile($("message-list"), rows);
  const hs = $("history-status");
  if (conv.loading) hs.textContent = "Loading earlier messages…";
  else if (conv.historyError) hs.textContent = conv.historyError;
  else if (conv.historyLoaded && !conv.hasMore) {
    hs.textContent = conv.msgs.size ? `This is the beginning of your chat with ${friendName(conv.peerId)}.`
      : `No messages yet. Say hello to ${friendName(conv.peerId)}!`;
  } else hs.textContent = "";
  hs.dataset.state = conv.loading ? "loading" : (conv.historyLoaded && !conv.hasMore ? "start" : "more");
  if (mode === "bottom" || (mode === "auto" && nearBottom)) box.scrollTop = box.scrollHeight;
  else if (mode === "prepend") box.scrollTop = prevTop + (box.scrollHeight - prevHeight);
  else box.scrollTop = prevTop;
}

function openConversation(peerId) {
  groups.close();
  state.current = peerId;
  const conv = getConv(peerId);
  renderFriends();
  renderConversation();
  if (!conv.historyLoaded || conv.stale) loadHistory(conv, null);
  flushReads();
  if (window.matchMedia("(min-width: 700px)").matches) $("composer-input").focus();
}

function closeConversation() {
  state.current = null;
  renderFriends();
  renderConversation();
}

async function loadHistory(conv, beforeSeq) {
  if (conv.loading) return;
  conv.loading = true;
  conv.historyError = "";
  if (state.current === conv.peerId) renderMessages("prepend");
  const session = state.session;
  let body = null;
  try {
    const q = new URLSearchParams({ peerId: String(conv.peerId), limit: String(PAGE_SIZE) });
    if (beforeSeq != null) q.set("beforeSeq", String(beforeSeq));
    body = await api("GET", `/api/messages?${q}`);
  } catch (e) {
    conv.historyError = `Could not load messages: ${e.message}`;
    conv.historyErrorAt = Date.now();
  }
  conv.loading = false;
  if (session !== state.session) return;
  if (body) {
    const me = state.session.userId;
    let minSeq = null;
    for (const m of body.messages || []) {
      const mm = mergeMessage(conv, m);
      if (mm.fromUserId === me && mm.seq != null) state.client.discard(mm.msgId);   // stored
      if (m.fromUserId !== me && m.status !== "read") conv.unread.add(m.msgId);
      if (mm.seq != null && (minSeq == null || mm.seq < minSeq)) minSeq = mm.seq;
    }
    if (minSeq != null && (conv.oldestSeq == null || minSeq < conv.oldestSeq)) conv.oldestSeq = minSeq;
    if (beforeSeq != null || !conv.historyLoaded) conv.hasMore = Boolean(body.hasMore);
    conv.historyLoaded = true;
    conv.stale = false;
  }
  if (state.current === conv.peerId) {
    renderMessages(beforeSeq != null ? "prepend" : (conv.shownOnce ? "auto" : "bottom"));
    conv.shownOnce = true;
    flushReads();
    maybeLoadOlder();            // the first page may not fill the view
  }
  renderFriends();
}

function maybeLoadOlder() {
  if (state.current == null) return;
  const conv = getConv(state.current);
  const box = $("messages");
  if (conv.loading || !conv.historyLoaded || !conv.hasMore) return;
  if (conv.historyError && Date.now() - conv.historyErrorAt < 5000) return;   // no retry storm
  if (box.scrollTop < 120 || box.scrollHeight <= box.clientHeight) {
    loadHistory(conv, conv.oldestSeq);
  }
}

// ---------------------------------------------------------------------------
// Sending (through the client's outbox: resent with the same msgId until acked)

function sendText(text) {
  const peerId = state.current;
  if (peerId == null) return;
  const conv = getConv(peerId);
  const m = mergeMessage(conv, {
    msgId: uuid4(), fromUserId: state.session.userId, toUserId: peerId,
    content: text, contentType: 1, createdAt: Date.now(), status: "pending",
  });
  renderMessages("bottom");
  renderFriends();
  state.client.send(peerId, text, { msgId: m.msgId });
}

// Files: each is uploaded (its type sniffed by the gateway), then sent as an image (2),
// voice (4) or file (3) message whose content names it (docs/protocol.md).
let uploadStatusTimer = null;
function uploadStatus(text, isError) {
  const status = $("upload-status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
  show(status, Boolean(text));
  clearTimeout(uploadStatusTimer);
  if (text && isError) uploadStatusTimer = setTimeout(() => show(status, false), 8000);
}

async function sendFiles(list) {
  const peerId = state.current;
  if (peerId == null || !list || !list.length) return;
  for (const file of Array.from(list)) {
    uploadStatus(`Uploading ${file.name || "file"}…`, false);
    let upload;
    try {
      upload = await uploadFile(file, { token: state.session.token });
    } catch (e) {
      uploadStatus(`${file.name || "file"}: ${e.message}`, true);
      if (e.status === 401) signOut("Your session has ended. Please sign in again.");
      return;
    }
    uploadStatus("", false);
    const content = fileContent(upload);
    const contentType = fileContentType(upload);
    const conv = getConv(peerId);
    const m = mergeMessage(conv, {
      msgId: uuid4(), fromUserId: state.session.userId, toUserId: peerId,
      content, contentType, createdAt: Date.now(), status: "pending",
    });
    if (state.current === peerId) renderMessages("bottom");
    renderFriends();
    state.client.send(peerId, content, { msgId: m.msgId, contentType });
  }
}

function retry(m) {
  m.status = "pending";
  m.error = "";
  renderMessages();
  state.client.send(m.toUserId, m.content, { msgId: m.msgId, contentType: m.contentType });
}

function flushReads() {
  if (!live() || state.current == null || !visible()) return;
  const conv = state.convs.get(state.current);
  if (!conv || conv.unread.size === 0) return;
  if (!state.client.markRead(conv.peerId, [...conv.unread])) return;
  conv.unread.clear();
  renderFriends();
}

// ---------------------------------------------------------------------------
// The connection (skyeim-client.js) and its banners

function listen(client) {
  client.on("state", onState);
  client.on("close", onClose);
  client.on("connected", onConnected);
  client.on("chat", onChat);
  client.on("ack", onAck);
  client.on("read", onRead);
  client.on("typing", onTyping);
  client.on("online", (d) => onPresence(d, true));
  client.on("offline", (d) => onPresence(d, false));
  client.on("friend_added", onFriendAdded);
  client.on("friend_removed", onFriendRemoved);
  client.on("conversation_updated", onConversationUpdated);
  client.on("notice", onNotice);
  client.on("error", onError);
  client.on("sync_messages", onSyncMessages);
  client.on("message_recalled", onRecalled);
  client.on("message_edited", onEdited);
  client.on("messages_deleted", onDeletedForMe);
  client.on("token_expiring", () => showBanner(
    "Your session expires soon. Sign in again to keep chatting.",
    "Sign in again", () => signOut(""), "expiring"));
  groups.listen(client);
  requests.listen(client);
}

function onState(s) {
  if (s.state === State.WAITING) showReconnecting(s.at);
  else if (s.state === State.REPLACED) {
    showBanner("SkyeIM was opened in another tab or window, so this one is disconnected.",
      "Use it here", () => state.client.connect(), "replaced");
  } else if (s.state === State.EXPIRED) {
    signOut("Your session has expired. Please sign in again.");
  }
}

function onClose(c) {
  document.body.classList.add("disconnected");
  for (const conv of state.convs.values()) if (conv.historyLoaded) conv.stale = true;
  if (!c.opened && c.code !== CloseCode.NORMAL) {
    // The handshake failed: maybe the token is no longer accepted (api() signs out on 401).
    api("GET", "/api/friends").catch(() => {});
  }
}

function showReconnecting(at) {
  const update = () => {
    const s = Math.max(0, Math.ceil((at - Date.now()) / 1000));
    showBanner(s > 0 ? `Connection lost. Reconnecting in ${s} s…` : "Connection lost. Reconnecting…",
      "Retry now", () => state.client.connect(), "reconnecting");
  };
  update();
  clearInterval(state.timers.countdown);
  state.timers.countdown = setInterval(update, 1000);
}

function showBanner(text, actionText, action, kind) {
  const banner = $("banner");
  $("banner-text").textContent = text;
  const btn = $("banner-action");
  btn.textContent = actionText || "";
  btn.onclick = action || null;
  show(btn, Boolean(actionText));
  banner.dataset.kind = kind || "";
  show(banner, true);
}

function hideBanner() {
  clearInterval(state.timers.countdown);
  show($("banner"), false);
  $("banner").dataset.kind = "";
}

// ---------------------------------------------------------------------------
// Frames from the gateway (typed events of skyeim-client.js)

function onConnected(d) {
  if (d.userId !== state.session.userId) {
    signOut("Please sign in again.");
    return;
  }
  document.body.classList.remove("disconnected");
  clearInterval(state.timers.countdown);
  if ($("banner").dataset.kind !== "expiring") hideBanner();
  const online = new Set(d.onlineFriends || []);
  for (const f of state.friends.values()) f.online = online.has(f.userId);
  renderFriends();
  renderConvHead();
  refreshFriends();
  refreshConversations();
  flushReads();
  if (state.current != null) {
    const conv = getConv(state.current);
    if (conv.stale || !conv.historyLoaded) loadHistory(conv, null);   // catch up on ticks missed
  }
}

function onChat(d) {
  const me = state.session.userId;
  if (d.fromUserId === me) return onOwnCopy(d);
  if (d.toUserId !== me) return undefined;
  const peer = d.fromUserId;
  stopTyping(peer);               // the message it was typing has arrived
  const conv = getConv(peer);
  mergeMessage(conv, { ...d, status: "delivered" });   // de-duplicated by (fromUserId, msgId)
  conv.unread.add(d.msgId);       // pushed again = still unread on the server
  if (!state.friends.has(peer)) refreshFriendsSoon();
  flushReads();
  renderFriends();
  if (state.current === peer) renderMessages("auto");
  return undefined;
}

function onAck(d) {
  const m = state.mine.get(d.msgId);
  if (!m || Number.isInteger(d.groupId)) return;
  if (Number.isInteger(d.seq)) m.seq = d.seq;
  if (d.status === "sent" && Number.isInteger(d.timestamp)) m.createdAt = d.timestamp;
  const status = d.status === "delivered" ? "delivered" : "sent";
  if (m.status === "failed" || STATUS_RANK[status] > STATUS_RANK[m.status]) m.status = status;
  m.error = "";
  if (state.current === m.toUserId) renderMessages();
  renderFriends();
}

// A chat this user sent from another device (several devices per user)
function onOwnCopy(d) {
  const conv = getConv(d.toUserId);
  mergeMessage(conv, { ...d, status: "sent" });
  renderFriends();
  if (state.current === d.toUserId) renderMessages("auto");
}

function onTyping(d) {
  if (Number.isInteger(d.groupId)) return;       // groups.js shows those
  const peer = d.fromUserId;
  if (d.state !== "typing") { stopTyping(peer); return; }
  clearTimeout(state.typingFrom.get(peer));
  state.typingFrom.set(peer, setTimeout(() => stopTyping(peer), TYPING_SHOW_MS));
  if (state.current === peer) renderConvHead();
}

function stopTyping(peer) {
  if (!state.typingFrom.has(peer)) return;
  clearTimeout(state.typingFrom.get(peer));
  state.typingFrom.delete(peer);
  if (state.current === peer) renderConvHead();
}

// While the user types, tell the open conversation's peer, throttled
function sendTyping() {
  const peer = state.current;
  if (peer == null || !live() || !$("composer-input").value.trim()) return;
  const now = Date.now();
  if (state.typingTo === peer && now - state.typingSentAt < TYPING_SEND_MS) return;
  if (state.client.sendFrame("typing", { toUserId: peer, state: "typing" })) {
    state.typingTo = peer;
    state.typingSentAt = now;
  }
}

function onRead(d) {
  if (d.own === true) {           // read on another device of ours: not unread here either
    const conv = state.convs.get(d.peerId);
    if (conv) { for (const id of d.msgIds) conv.unread.delete(id); renderFriends(); }
    return;
  }
  let changed = false;
  for (const id of d.msgIds) {
    const m = state.mine.get(id);
    if (m && m.toUserId === d.peerId && m.status !== "read") { m.status = "read"; changed = true; }
  }
  if (changed && state.current === d.peerId) renderMessages();
}

function onPresence(d, online) {
  const f = state.friends.get(d.userId);
  if (!f) { refreshFriendsSoon(); return; }
  f.online = online;
  if (!online && Number.isInteger(d.timestamp)) f.lastSeen = d.timestamp;
  renderFriends();
  renderConvHead();
}

// A friendship made or ended, here or elsewhere (PROTOCOL.md 9.5): the list follows at
// once, and presence with it (online/offline frames come only between friends)
function onFriendAdded(d) {
  const old = state.friends.get(d.userId);
  state.friends.set(d.userId, {
    userId: d.userId, username: d.username || (old && old.username) || null,
    online: Boolean(d.online), lastSeen: old ? old.lastSeen : null,
  });
  friendsChanged();               // also fills in a username the Auth service could not give
  renderFriends();
  renderConvHead();
}

function onFriendRemoved(d) {
  friendsChanged();
  if (!state.friends.delete(d.userId)) return;
  renderFriends();
  renderConvHead();
}

// A notice from the team's backend (PROTOCOL.md 9.2): shown for a while, as text
function noticeText(d) {
  const data = d.data;
  if (typeof data === "string" && data) return data;
  if (data && typeof data === "object") {
    for (const key of ["text", "message", "title"]) {
      if (typeof data[key] === "string" && data[key]) return data[key];
    }
  }
  return d.event;
}

function onNotice(d) {
  const list = $("notices");
  const item = el("li", "notice", noticeText(d));
  item.dataset.event = d.event;
  item.title = "Dismiss";
  item.addEventListener("click", () => item.remove());
  list.append(item);
  while (list.children.length > NOTICES_SHOWN) list.firstElementChild.remove();
  setTimeout(() => item.remove(), NOTICE_SHOW_MS);
}

function onSyncMessages(d) {
  if (!Number.isInteger(d.peerId)) return;       // a group's pages are groups.js's
  const me = state.session.userId;
  const conv = getConv(d.peerId);
  for (const m of d.messages) {
    if (!m || typeof m.msgId !== "string" || !Number.isInteger(m.fromUserId)) continue;
    const cur = mergeMessage(conv, m);
    if (cur && !cur.recalled && m.fromUserId !== me && m.status !== "read") conv.unread.add(m.msgId);
  }
  flushReads();
  renderFriends();
  if (state.current === d.peerId) renderMessages("auto");
}

function onError(d) {
  if (d.msgId != null && state.changing.delete(d.msgId)) {     // a refused recall or edit
    const why = d.code === ErrorCode.TOO_LATE ? "It is too late to change that message."
      : d.code === ErrorCode.RECALLED ? "That message was recalled." : (d.message || d.code);
    showBanner(why, "OK", hideBanner, "error");
    return;
  }
  const m = d.msgId != null ? state.mine.get(d.msgId) : null;
  if (!m) {
    if (d.msgId == null) console.warn("gateway error", d.code, d.message);
    return;                         // a group message's error is groups.js's
  }
  if (d.retrying) return;           // still in the client's outbox: it goes out again shortly
  m.status = "failed";
  m.error = d.code === ErrorCode.NOT_FRIENDS ? "you are not friends" : (d.message || d.code || "error");
  if (state.current === m.toUserId) renderMessages();
}

// ---------------------------------------------------------------------------
// Wiring

// groups.js: what it shares with this page
const groups = createGroups({
  api, uuid4, closeConversation,
  renderFile: (m) => files.render(m),
  session: () => state.session,
  client: () => state.client,
  name: (id) => friendName(id),
  friendId: (lowerName) => {
    const f = [...state.friends.values()].find((x) => (x.username || "").toLowerCase() === lowerName);
    return f ? f.userId : null;
  },
});

// requests.js: friend requests and blocking
let sayTimer = null;
const requests = createRequests({
  api, closeConversation,
  current: () => state.current,
  refreshFriends: () => refreshFriends(),
  name: (id) => friendName(id),
  say: (text, ok) => {
    const status = $("add-friend-status");
    status.textContent = text;
    status.className = `add-friend-status ${ok ? "ok" : "error"}`;
    show(status, true);
    clearTimeout(sayTimer);
    sayTimer = setTimeout(() => show(status, false), 6000);
  },
});

function init() {
  requests.init();
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); doLogin(false); });
  $("register-button").addEventListener("click", () => doLogin(true));
  $("logout-button").addEventListener("click", () => signOut("", true));
  $("back-button").addEventListener("click", closeConversation);
  $("conv-pin").addEventListener("click", () => toggleFlag("pin"));
  $("conv-mute").addEventListener("click", () => toggleFlag("mute"));

  let statusTimer = null;
  $("add-friend-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("add-friend-input");
    const name = input.value.trim();
    const status = $("add-friend-status");
    if (!name) return;
    $("add-friend-button").disabled = true;
    try {
      const answer = await api("POST", "/api/friends", { username: name });
      if (input.value.trim() === name) input.value = "";    // not what was typed meanwhile
      if (answer && answer.status === "requested") {         // Friends.RequireAcceptance
        status.textContent = `Friend request sent to ${name}.`;
        status.className = "add-friend-status ok";
        return;
      }
      await refreshFriends();
      const f = [...state.friends.values()].find(
        (x) => (x.username || "").toLowerCase() === name.toLowerCase());
      status.textContent = `${f ? f.username : name} is now your friend.`;
      status.className = "add-friend-status ok";
      if (f) openConversation(f.userId);
    } catch (err) {
      status.textContent = err.status === 404 ? `There is no user named “${name}”.` : err.message;
      status.className = "add-friend-status error";
    } finally {
      show(status, true);
      $("add-friend-button").disabled = false;
      clearTimeout(statusTimer);
      statusTimer = setTimeout(() => show(status, false), 6000);
    }
  });

  const input = $("composer-input");
  const grow = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  };
  input.addEventListener("input", grow);
  input.addEventListener("input", sendTyping);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.replace(/\s+$/, "");
    if (!text.trim()) return;
    sendText(text);
    state.typingTo = null;        // the next keystroke may signal at once
    input.value = "";
    grow();
    input.focus();
  });

  // files: the attach button, pasting into the composer, dropping on the conversation
  $("attach-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (e) => {
    const picked = Array.from(e.target.files || []);
    e.target.value = "";
    sendFiles(picked);
  });
  input.addEventListener("paste", (e) => {
    const pasted = e.clipboardData && e.clipboardData.files;
    if (pasted && pasted.length) {
      e.preventDefault();
      sendFiles(Array.from(pasted));
    }
  });
  const conversation = $("conversation");
  conversation.addEventListener("dragover", (e) => {
    if (state.current == null || !e.dataTransfer || !e.dataTransfer.types.includes("Files")) return;
    e.preventDefault();
    conversation.classList.add("dropping");
  });
  conversation.addEventListener("dragleave", () => conversation.classList.remove("dropping"));
  conversation.addEventListener("drop", (e) => {
    conversation.classList.remove("dropping");
    if (state.current == null || !e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    sendFiles(Array.from(e.dataTransfer.files));
  });

  $("messages").addEventListener("scroll", maybeLoadOlder, { passive: true });
  // Back in front, or back online: reconnect now rather than at the backoff's next try
  // (never by itself after "replaced": that waits for the user's "Use it here")
  const reconnectNow = () => {
    if (state.client && state.client.state !== State.REPLACED) state.client.connect();
  };
  document.addEventListener("visibilitychange", () => {
    if (!visible() || !state.session) return;
    flushReads();
    refreshFriends();
    reconnectNow();
  });
  window.addEventListener("online", reconnectNow);

  state.session = loadSession();
  if (state.session) startChat();
  else showLogin("", false);
}

init();
