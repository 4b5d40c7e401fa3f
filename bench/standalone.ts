// What the bench's stand-alone scripts (minimal-clients, heap-diff, echo-at-rpclink-pace) share: the built
// fixture server, started on a free loopback port and answering its stats route.
import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { getRandomPort } from 'get-port-please'

export const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

/** The `[rounds] [seconds per round]` arguments of a script that alternates timed rounds; exits on bad ones. */
export function roundsAndSeconds(script: string, defaultRounds: number, defaultSeconds: number): { rounds: number, seconds: number } {
  const rounds = Number(process.argv[2] ?? defaultRounds)
  const seconds = Number(process.argv[3] ?? defaultSeconds)
  if (!(Number.isInteger(rounds) && rounds >= 1 && seconds > 0)) {
    console.error(`usage: jiti bench/${script} [rounds >= 1, default ${defaultRounds}] [seconds per round > 0, default ${defaultSeconds}]`)
    process.exit(1)
  }
  return { rounds, seconds }
}

export interface FixtureServer {
  port: number
  /** `http://127.0.0.1:<port>` */
  base: string
  process: ChildProcess
}

/**
 * Starts the built fixture server (`node [execArgv] index.mjs`) and waits until it answers (at most 30 s, then it
 * is killed); exits the process if the fixture is not built.
 */
export async function startFixtureServer(execArgv: string[] = []): Promise<FixtureServer> {
  const serverEntry = fileURLToPath(new URL('fixture/.output/server/index.mjs', import.meta.url))
  if (!existsSync(serverEntry)) {
    console.error('bench/fixture is not built: run `npm run bench -- --quick` (or `nuxi build bench/fixture`) first.')
    process.exit(1)
  }
  const port = await getRandomPort('127.0.0.1')
  const base = `http://127.0.0.1:${port}`
  const child = spawn(process.execPath, [...execArgv, serverEntry], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production' },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  let exited = false
  child.once('exit', () => exited = true)
  const deadline = Date.now() + 30_000
  while (!(await fetch(`${base}/_bench/stats`).then(response => response.ok, () => false))) {
    if (exited) throw new Error(`the fixture server exited with ${child.exitCode} before it answered`)
    if (Date.now() > deadline) {
      child.kill()
      throw new Error('the fixture server did not answer within 30 s')
    }
    await sleep(50)
  }
  return { port, base, process: child }
}
