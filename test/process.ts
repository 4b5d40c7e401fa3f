import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { getRandomPort } from 'get-port-please'

export interface NodeServer {
  url: string
  port: number
  process: ChildProcess
  logs: string[]
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

/** Starts a built Nitro server (`.output/server/index.mjs`) on a free port and waits until it listens. */
export async function startNodeServer(entry: string, env: Record<string, string> = {}, port?: number, execArgv: string[] = []): Promise<NodeServer> {
  port ??= await getRandomPort('127.0.0.1')
  const child = spawn(process.execPath, [...execArgv, entry], {
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: string[] = []
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      logs.push(chunk.toString())
      if (chunk.toString().includes('Listening on')) resolve()
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', (chunk: Buffer) => logs.push(chunk.toString()))
    child.once('exit', code => reject(new Error(`server exited with ${code}: ${logs.join('')}`)))
  })
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    process: child,
    logs,
    async stop(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      await exited
    },
  }
}
