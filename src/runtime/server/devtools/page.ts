// The DevTools tab's page: one self-contained document (Nuxt DevTools shows it in an iframe; a Nitro-only app
// opens it directly). It reads `state` once a second while visible, and a call's frames when it is clicked.

const style = `
:root { color-scheme: light dark; --fg: #1f2328; --muted: #6b7280; --line: #e5e7eb; --bg: #fff; --alt: #f6f8fa; --accent: #00a06a; --bad: #d1242f; --warn: #b45309; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9ca3af; --line: #30363d; --bg: #151515; --alt: #1d1f21; --accent: #3ddc97; --bad: #ff7b72; --warn: #e3b341; } }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 ui-sans-serif, system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { position: sticky; top: 0; z-index: 1; display: flex; gap: 16px; align-items: center; padding: 10px 16px; border-bottom: 1px solid var(--line); background: var(--bg); }
header h1 { margin: 0; font-size: 15px; }
header .figures { display: flex; gap: 14px; color: var(--muted); }
header .figures b { color: var(--fg); }
header label { margin-left: auto; color: var(--muted); }
main { padding: 4px 16px 24px; }
h2 { margin: 18px 0 6px; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { font-weight: 500; color: var(--muted); }
td.num, th.num { text-align: right; }
tr.closed td { color: var(--muted); }
#calls tbody tr { cursor: pointer; }
#calls tbody tr:hover, #calls tbody tr.selected { background: var(--alt); }
.state-done { color: var(--accent); } .state-error { color: var(--bad); } .state-aborted, .state-closed { color: var(--warn); }
.state-running, .state-streaming { color: var(--fg); font-weight: 600; }
.empty { color: var(--muted); padding: 6px 8px; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
#payload { display: none; grid-template-columns: 1fr 1fr; gap: 12px; margin-top: 10px; }
#payload.open { display: grid; }
#payload pre { margin: 4px 0 0; padding: 8px; max-height: 320px; overflow: auto; background: var(--alt); border: 1px solid var(--line); border-radius: 4px; white-space: pre-wrap; word-break: break-all; }
.limits { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }
.limits dt { color: var(--muted); } .limits dd { margin: 0; }
`

const script = `
const base = location.pathname.replace(/\\/$/, '')
const $ = id => document.getElementById(id)
let state, selected, paused = false, showClosed = false
const esc = value => String(value ?? '').replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])
const bytes = n => n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KB' : (n / 1048576).toFixed(1) + ' MB'
const ms = n => n === undefined || n === null ? '' : n < 10 ? n.toFixed(2) + ' ms' : n < 1000 ? n.toFixed(0) + ' ms' : (n / 1000).toFixed(2) + ' s'
const ago = t => { const s = Math.max(0, Math.round((state.now - t) / 1000)); return s < 60 ? s + ' s ago' : s < 3600 ? Math.floor(s / 60) + ' min ago' : new Date(t).toLocaleTimeString() }
const short = id => esc(String(id).slice(0, 8))
function table(id, head, rows, empty) {
  $(id).innerHTML = '<thead><tr>' + head.map(h => '<th' + (h.startsWith('#') ? ' class="num">' + h.slice(1) : '>' + h) + '</th>').join('') + '</tr></thead><tbody>'
    + (rows.length ? rows.join('') : '<tr><td class="empty" colspan="' + head.length + '">' + empty + '</td></tr>') + '</tbody>'
}
function render() {
  const open = state.connections.filter(c => c.closedAt === undefined || c.closedAt === null)
  const streams = state.calls.filter(c => c.state === 'streaming')
  $('figures').innerHTML = '<span><b>' + open.length + '</b> connections</span><span><b>' + state.calls.filter(c => c.state === 'running').length + '</b> calls running</span><span><b>' + streams.length + '</b> streams</span><span><b>' + state.channels.filter(c => c.subscribers > 0).length + '</b> channels</span>'
  // Closed connections (kept for their close code) would crowd out the open ones: the last few, unless asked.
  const closed = state.connections.filter(c => c.closedAt)
  const hidden = showClosed ? 0 : Math.max(0, closed.length - 3)
  const listed = [...open, ...closed.slice(0, closed.length - hidden)]
  table('connections', ['Id', 'Origin', 'Address', 'Opened', '#Calls in flight', '#In', '#Out', 'Closed'], listed.map(c =>
    '<tr data-id="' + esc(c.id) + '"' + (c.closedAt ? ' class="closed"' : '') + '><td><code>' + short(c.id) + '</code></td><td>' + esc(c.origin ?? '(none)') + '</td><td>' + esc(c.remoteAddress) + '</td><td>' + ago(c.openedAt)
    + '</td><td class="num">' + c.callsInFlight + '</td><td class="num">' + bytes(c.bytesIn) + '</td><td class="num">' + bytes(c.bytesOut) + '</td><td>'
    + (c.closedAt ? esc(c.closeCode ?? '') + ' ' + esc(c.closeReason ?? '') + ' (' + ago(c.closedAt) + ')' : 'open') + '</td></tr>'), 'No connection yet: open a page that calls useRpc().')
  if (hidden) $('connections').querySelector('tbody').insertAdjacentHTML('beforeend', '<tr><td colspan="8" class="empty"><a href="#" id="more-closed">' + hidden + ' more closed</a></td></tr>')
  const filter = $('filter').value.trim().toLowerCase()
  const calls = state.calls.filter(c => !filter || c.procedure.toLowerCase().includes(filter))
  table('calls', ['Procedure', 'Result', '#Duration', '#Input', '#Output', '#Events', 'Connection', 'Started'], calls.map(c =>
    '<tr data-seq="' + c.seq + '" data-procedure="' + esc(c.procedure) + '" data-connection="' + esc(c.connection) + '"' + (c.seq === selected ? ' class="selected"' : '') + '><td><code>' + esc(c.procedure) + '</code></td><td class="state-' + c.state + '">' + esc(c.code ?? c.state)
    + '</td><td class="num">' + ms(c.duration) + '</td><td class="num">' + bytes(c.inputBytes) + '</td><td class="num">' + bytes(c.outputBytes) + '</td><td class="num">' + (c.state === 'streaming' || c.events ? c.events : '')
    + '</td><td><code>' + short(c.connection) + '</code></td><td>' + ago(c.startedAt) + '</td></tr>'), filter ? 'No recent call matches.' : 'No call yet.')
  table('streams', ['Procedure', '#Events sent', '#Bytes out', 'Connection', 'Open since'], streams.map(c =>
    '<tr data-seq="' + c.seq + '"><td><code>' + esc(c.procedure) + '</code></td><td class="num">' + c.events + '</td><td class="num">' + bytes(c.outputBytes) + '</td><td><code>' + short(c.connection) + '</code></td><td>' + ago(c.startedAt) + '</td></tr>'), 'No open stream.')
  table('channels', ['Channel', '#Subscribers here', '#Published here', 'Last published'], state.channels.map(c =>
    '<tr data-channel="' + esc(c.name) + '"><td><code>' + esc(c.name) + '</code></td><td class="num">' + c.subscribers + '</td><td class="num">' + c.published + '</td><td>' + (c.lastPublishedAt ? ago(c.lastPublishedAt) : '') + '</td></tr>'), 'No channel used yet (usePublisher(), usePresence()).')
  $('limits').innerHTML = state.limits.map(l => '<dl class="limits">' + Object.entries(l).map(([k, v]) =>
    '<dt>' + esc(k) + '</dt><dd><code>' + esc(Array.isArray(v) ? (v.length ? v.join(', ') : '(none)') : typeof v === 'object' && v ? JSON.stringify(v) : v) + '</code></dd>').join('') + '</dl>').join('') || '<p class="empty">No socket route has started yet.</p>'
}
const pretty = text => { try { return JSON.stringify(JSON.parse(text), null, 2) } catch { return text } }
$('calls').addEventListener('click', async (event) => {
  const row = event.target.closest('tr[data-seq]')
  if (!row) return
  const seq = selected = Number(row.dataset.seq)
  render()
  const response = await fetch(base + '/calls/' + seq)
  const payload = response.ok ? await response.json() : { input: 'No longer kept.', output: '' }
  // Another call was clicked meanwhile: its answer shows, not this one's.
  if (seq !== selected) return
  $('input').textContent = pretty(payload.input)
  $('output').textContent = payload.output ? pretty(payload.output) : '(no answer yet)'
  $('payload').classList.add('open')
})
$('filter').addEventListener('input', () => state && render())
$('connections').addEventListener('click', (event) => {
  if (event.target.id !== 'more-closed') return
  event.preventDefault()
  showClosed = true
  render()
})
$('pause').addEventListener('change', event => { paused = event.target.checked })
async function refresh() {
  try {
    if (!paused && !document.hidden) {
      state = await (await fetch(base + '/state')).json()
      render()
      document.body.dataset.loaded = 'true'
    }
  }
  catch {}
  setTimeout(refresh, 1000)
}
refresh()
`

export const devtoolsPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nuxt-orpc DevTools</title>
<style>${style}</style>
</head>
<body>
<header><h1>nuxt-orpc</h1><div class="figures" id="figures"></div><label><input type="checkbox" id="pause"> Pause</label></header>
<main>
<h2>Connections</h2><table id="connections"></table>
<h2>Recent calls <input id="filter" placeholder="Filter by procedure" style="margin-left: 8px; font: inherit; text-transform: none"></h2>
<table id="calls"></table>
<section id="payload"><div><b>Sent</b><pre id="input"></pre></div><div><b>Answered (last frame)</b><pre id="output"></pre></div></section>
<h2>Open streams</h2><table id="streams"></table>
<h2>Publisher channels</h2><table id="channels"></table>
<h2>Limits in force</h2><div id="limits"></div>
</main>
<script type="module">${script}</script>
</body>
</html>
`
