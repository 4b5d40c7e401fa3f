import { prepareTypes } from '../scripts/prepare-types.mjs'

export default function setup() {
  prepareTypes(process.cwd(), ['test/fixtures/basic', 'test/fixtures/pubsub', 'test/fixtures/query'])
}
