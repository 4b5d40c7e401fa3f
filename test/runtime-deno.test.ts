import { denoRuntime, describeContract } from './contract'

// The basic fixture built with the `deno-server` preset, run by Deno (the `deno` devDependency).
await describeContract(denoRuntime)
