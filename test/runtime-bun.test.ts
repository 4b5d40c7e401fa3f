import { bunRuntime, describeContract } from './contract'

// The basic fixture built with the `bun` preset, run by Bun (the `bun` devDependency).
await describeContract(bunRuntime)
