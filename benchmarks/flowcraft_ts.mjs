// Flowcraft TS versions of the benchmark flows. Copied next to node_modules by peer_ts.py and
// run there; prints one JSON object. argv[2] = "quick" for a single untimed-ish pass.
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { createFlow, FlowRuntime, NullLogger } from 'flowcraft'

const quick = process.argv[2] === 'quick'
const settings = quick
	? { warmup: 1, warmupMs: 0, repeats: 1, targetMs: 0, maxInner: 1 }
	: { warmup: 3, warmupMs: 300, repeats: 7, targetMs: 80, maxInner: 20000 }

async function measure(op) {
	// Warm up by count and by time, so V8 has optimized the hot paths before timing.
	const warmStart = performance.now()
	for (let i = 0; i < settings.warmup || performance.now() - warmStart < settings.warmupMs; i++) await op()
	let t0 = performance.now()
	await op()
	const one = performance.now() - t0
	const inner = Math.max(1, Math.min(settings.maxInner, one > 0 ? Math.floor(settings.targetMs / one) : 1))
	const samples = []
	for (let r = 0; r < settings.repeats; r++) {
		t0 = performance.now()
		for (let i = 0; i < inner; i++) await op()
		samples.push(((performance.now() - t0) * 1000) / inner)
	}
	samples.sort((a, b) => a - b)
	return samples[Math.floor(samples.length / 2)]
}

const runtime = new FlowRuntime({ logger: new NullLogger() })
const step = async () => ({ output: 1 })
const RESUME = { output: { approved: true }, action: 'approved' }

// TS 2.x resume ignores `action` (a known defect), so a labelled edge would never run
// `process`; the unlabelled edge makes TS do the same work as the other implementations.
const approval = createFlow('approval')
	.node('submit', async () => ({ output: 'submitted' }))
	.wait('approve')
	.node('process', async ({ input }) => ({ output: input.approved ? 'paid' : 'refused' }))
	.edge('submit', 'approve')
	.edge('approve', 'process')
const approvalBp = approval.toBlueprint()
const approvalReg = approval.getFunctionRegistry()

async function approvalOp() {
	const first = await runtime.run(approvalBp, {}, { functionRegistry: approvalReg })
	const final = await runtime.resume(approvalBp, first.serializedContext, RESUME, 'approve', {
		functionRegistry: approvalReg,
	})
	return [first, final]
}

function chain(n) {
	let f = createFlow(`chain${n}`)
	for (let i = 0; i < n; i++) {
		f = f.node(`n${i}`, step)
		if (i) f = f.edge(`n${i - 1}`, `n${i}`)
	}
	return f
}

function fanout(n) {
	let f = createFlow(`fanout${n}`).node('src', step).node('join', step, { config: { joinStrategy: 'all' } })
	for (let i = 0; i < n; i++) f = f.node(`b${i}`, step).edge('src', `b${i}`).edge(`b${i}`, 'join')
	return f
}

function runOp(flow, expectNodes) {
	const bp = flow.toBlueprint()
	const reg = flow.getFunctionRegistry()
	let checked = false
	return async () => {
		const r = await runtime.run(bp, {}, { functionRegistry: reg })
		if (!checked) {
			const done = Object.keys(r.context).filter((k) => k.startsWith('_outputs.')).length
			if (r.status !== 'completed' || done !== expectNodes) throw new Error(`${bp.id}: ${r.status}, ${done} outputs`)
			checked = true
		}
		return r
	}
}

const [first, final] = await approvalOp()
if (first.status !== 'awaiting' || final.context['_outputs.process'] !== 'paid') {
	throw new Error(`approval: ${first.status} then ${final.status} ${JSON.stringify(final.context)}`)
}
const pkg = JSON.parse(readFileSync(new URL('./node_modules/flowcraft/package.json', import.meta.url), 'utf8'))
const out = {
	version: pkg.version,
	node: process.version,
	approval_context_bytes: Buffer.byteLength(first.serializedContext, 'utf8'),
	us_per_op: {
		approval: await measure(approvalOp),
		chain100: await measure(runOp(chain(100), 100)),
		fanout20: await measure(runOp(fanout(20), 22)),
	},
}
console.log(JSON.stringify(out))
