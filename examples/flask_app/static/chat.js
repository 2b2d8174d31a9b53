// The example app's page: our own login, then SkyeIM through skyeim-client.js.
import { SkyeClient } from "/static/skyeim-client.js";

const $ = (id) => document.getElementById(id);
const names = new Map([[1, "System"]]);   // userId -> username, from our own /users
let client = null;
let token = null;

async function post(path, body) {
  const r = await fetch(path, { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) } });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.message || `HTTP ${r.status}`);
  return answer;
}

async function nameOf(userId) {
  if (!names.has(userId)) {
    const r = await fetch(`/users/${userId}`, { headers: { Authorization: `Bearer ${token}` } });
    names.set(userId, r.ok ? (await r.json()).username : `user ${userId}`);
  }
  return names.get(userId);
}

function addPeer(userId, username) {
  names.set(userId, username || names.get(userId));
  if (![...$("peer").options].some((o) => Number(o.value) === userId)) {
    $("peer").append(new Option(username || `user ${userId}`, String(userId)));
  }
}

function line(text, cls, data = {}) {
  const p = document.createElement("p");
  p.textContent = text;
  if (cls) p.className = cls;
  Object.assign(p.dataset, data);
  $("log").append(p);
  $("log").scrollTop = $("log").scrollHeight;
  return p;
}

async function showChat(m) {
  if ($("log").querySelector(`[data-key="${m.fromUserId}:${m.msgId}"]`)) return;  // chat and sync may both bring it
  addPeer(m.fromUserId, await nameOf(m.fromUserId));
  line(`${names.get(m.fromUserId)}: ${m.content}`, "", { key: `${m.fromUserId}:${m.msgId}` });
  client.markRead(m.fromUserId, [m.msgId]);
}

function start(login) {
  token = login.token;
  $("me").textContent = $("username").value;
  $("account").hidden = true;
  $("chat").hidden = false;
  client = new SkyeClient({ url: login.wsUrl, token: login.token,
    storage: sessionStorage, storageKey: `outbox.${login.userId}` });
  client.on("state", (s) => { $("state").textContent = s.state; });
  client.on("chat", showChat);
  client.on("sync_messages", (page) => page.messages.forEach(showChat));
  client.on("ack", (a) => {
    const p = $("log").querySelector(`[data-msg-id="${a.msgId}"]`);
    if (p) p.dataset.status = a.status;
  });
  client.on("error", (e) => {
    const p = e.msgId && $("log").querySelector(`[data-msg-id="${e.msgId}"]`);
    if (p) { p.dataset.status = e.code; p.title = e.message || e.code; p.textContent += ` (${e.code}: ${e.message})`; }
  });
  // username is null: SkyeIM's Auth service does not know our users; we do
  client.on("friend_added", async (f) => {
    const name = f.username || await nameOf(f.userId);
    addPeer(f.userId, name);
    line(`${name} is now your friend`, "notice");
  });
  client.on("notice", (n) => line(`notice ${n.event}: ${JSON.stringify(n.data)}`, "notice"));
  client.connect();
}

$("signup").addEventListener("click", async () => {
  try {
    await post("/signup", { username: $("username").value, password: $("password").value });
    start(await post("/login", { username: $("username").value, password: $("password").value }));
  } catch (e) { $("account-error").textContent = e.message; }
});
$("account").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { start(await post("/login", { username: $("username").value, password: $("password").value })); }
  catch (e) { $("account-error").textContent = e.message; }
});
$("befriend").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { const f = await post("/friends", { username: $("friend").value }); addPeer(f.userId, $("friend").value); $("friend").value = ""; }
  catch (e) { line(e.message, "notice"); }
});
$("compose").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const peer = Number($("peer").value);
  const text = $("text").value;
  if (!peer || !text) return;
  const msgId = client.send(peer, text);
  line(`me: ${text}`, "me", { msgId, status: "sending" });
  $("text").value = "";
});
