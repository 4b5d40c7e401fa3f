import { cloudflareRuntime, describeContract } from './contract'

// The basic fixture built with the `cloudflare-durable` preset, run by workerd through `wrangler dev --local`
// (the `wrangler` devDependency, which brings workerd from npm).
await describeContract(cloudflareRuntime)
