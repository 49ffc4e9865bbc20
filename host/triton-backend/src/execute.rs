//! TRITONBACKEND_ModelInstanceExecute: reads the requests, runs them in executions of the
//! compiled batch, answers each request (outputs or an error) and reports statistics.

use crate::batch;
use crate::ffi::{InstanceState, ModelState};
use crate::sys::*;
use crate::triton::*;
use std::ffi::CString;

/// A request handed to Execute, and whether it has been answered.
struct Slot {
    request: *mut TRITONBACKEND_Request,
    answered: bool,
}

#[no_mangle]
pub extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut TRITONBACKEND_ModelInstance,
    requests: *mut *mut TRITONBACKEND_Request,
    request_count: u32,
) -> Err {
    guard("TRITONBACKEND_ModelInstanceExecute", || {
        let mut state = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(
            unsafe { TRITONBACKEND_ModelInstanceState(instance, &mut state) },
            "TRITONBACKEND_ModelInstanceState",
        )?;
        if request_count == 0 {
            return Ok(());
        }
        if state.is_null() || requests.is_null() {
            return Err(Failure::internal(
                "rbln backend: execute without an instance state",
            ));
        }
        // SAFETY: set by ModelInstanceInitialize; Triton does not finalize during Execute.
        let inst = unsafe { &*(state as *const InstanceState) };
        // SAFETY: Triton passes `request_count` request pointers.
        let list = unsafe { std::slice::from_raw_parts(requests, request_count as usize) };
        let mut slots: Vec<Slot> = list
            .iter()
            .map(|&request| Slot {
                request,
                answered: false,
            })
            .collect();
        // From here on the requests are ours: every one is answered and released, even if the
        // execution panics.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            execute(instance, inst, &mut slots)
        }));
        let fallback = match outcome {
            Ok(()) => None,
            Err(p) => Some(format!(
                "rbln backend: model \"{}\" instance \"{}\": internal error (panic): {}",
                inst.model.name,
                inst.name,
                panic_message(&*p)
            )),
        };
        for slot in &mut slots {
            if !slot.answered {
                let msg = fallback
                    .as_deref()
                    .unwrap_or("rbln backend: the request was not answered");
                answer_error(instance, slot, Failure::internal(msg));
            }
            // SAFETY: the request is ours and not used after release.
            let err = unsafe {
                TRITONBACKEND_RequestRelease(slot.request, TRITONSERVER_REQUEST_RELEASE_ALL)
            };
            if let Err(e) = check(err, "TRITONBACKEND_RequestRelease") {
                log(TRITONSERVER_LOG_ERROR, &e.msg);
            }
        }
        Ok(())
    })
}

/// One request's validated input.
struct Parsed {
    items: usize,
    data: Vec<f32>,
    outputs: Vec<usize>,
}

fn execute(instance: *mut TRITONBACKEND_ModelInstance, inst: &InstanceState, slots: &mut [Slot]) {
    let exec_start = now_ns();
    let model = &inst.model;
    let mut valid: Vec<(usize, Parsed)> = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        match parse_request(model, slot.request) {
            Ok(p) => valid.push((i, p)),
            Err(f) => answer_error(instance, slot, f),
        }
    }
    let items: Vec<usize> = valid.iter().map(|(_, p)| p.items).collect();
    let batch_size = model.method.sig.batch;
    let row = model.method.input_row();
    let mut start = exec_start;
    for group in batch::plan(&items, batch_size) {
        let members = &valid[group];
        let parts: Vec<&[f32]> = members.iter().map(|(_, p)| p.data.as_slice()).collect();
        let input = batch::assemble(&parts, row, batch_size);
        let compute_start = now_ns();
        let result = model.method.run(input);
        let compute_end = now_ns();
        let group_items: Vec<usize> = members.iter().map(|(_, p)| p.items).collect();
        match result {
            Err(e) => {
                for (i, _) in members {
                    let f = Failure::from_kind(
                        e.kind,
                        format!("rbln backend: model \"{}\": {}", model.name, e.message),
                    );
                    answer_error(instance, &mut slots[*i], f);
                }
            }
            Ok(outputs) => {
                let per_output: Vec<Vec<&[f32]>> = outputs
                    .iter()
                    .map(|o| batch::split(o, batch_size, &group_items))
                    .collect();
                for (k, (i, p)) in members.iter().enumerate() {
                    let slot = &mut slots[*i];
                    let rows: Vec<&[f32]> = p.outputs.iter().map(|&o| per_output[o][k]).collect();
                    slot.answered = true;
                    let ok = respond(model, slot.request, p, &rows);
                    let end = now_ns();
                    report(
                        instance,
                        slot.request,
                        ok,
                        start,
                        compute_start,
                        compute_end,
                        end,
                    );
                }
                let exec_end = now_ns();
                let total: usize = group_items.iter().sum();
                // SAFETY: instance is live during Execute.
                let err = unsafe {
                    TRITONBACKEND_ModelInstanceReportBatchStatistics(
                        instance,
                        total as u64,
                        start,
                        compute_start,
                        compute_end,
                        exec_end,
                    )
                };
                if let Err(e) = check(err, "TRITONBACKEND_ModelInstanceReportBatchStatistics") {
                    log(TRITONSERVER_LOG_ERROR, &e.msg);
                }
            }
        }
        start = now_ns();
    }
}

fn report(
    instance: *mut TRITONBACKEND_ModelInstance,
    request: *mut TRITONBACKEND_Request,
    success: bool,
    exec_start: u64,
    compute_start: u64,
    compute_end: u64,
    exec_end: u64,
) {
    // SAFETY: instance and request are live (the request is not yet released).
    let err = unsafe {
        TRITONBACKEND_ModelInstanceReportStatistics(
            instance,
            request,
            success,
            exec_start,
            compute_start,
            compute_end,
            exec_end,
        )
    };
    if let Err(e) = check(err, "TRITONBACKEND_ModelInstanceReportStatistics") {
        log(TRITONSERVER_LOG_ERROR, &e.msg);
    }
}

/// Sends `failure` as the request's only response and records the failed request.
fn answer_error(instance: *mut TRITONBACKEND_ModelInstance, slot: &mut Slot, failure: Failure) {
    slot.answered = true;
    report(instance, slot.request, false, 0, 0, 0, 0);
    let mut response = std::ptr::null_mut();
    // SAFETY: the request is ours until released.
    let made = check(
        unsafe { TRITONBACKEND_ResponseNew(&mut response, slot.request) },
        "TRITONBACKEND_ResponseNew",
    );
    if let Err(e) = made {
        log(
            TRITONSERVER_LOG_ERROR,
            &format!("{}; could not send: {}", e.msg, failure.msg),
        );
        return;
    }
    send(response, Some(failure));
}

/// Sends a response (taking it), with `failure` as its error if any; true if Triton took it.
fn send(response: *mut TRITONBACKEND_Response, failure: Option<Failure>) -> bool {
    let err = failure.map_or(std::ptr::null_mut(), Failure::into_error);
    // SAFETY: response is ours; Triton takes it. We keep and delete `err`.
    let sent =
        unsafe { TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err) };
    if !err.is_null() {
        // SAFETY: we own err.
        unsafe { TRITONSERVER_ErrorDelete(err) };
    }
    match check(sent, "TRITONBACKEND_ResponseSend") {
        Ok(()) => true,
        Err(e) => {
            log(TRITONSERVER_LOG_ERROR, &e.msg);
            false
        }
    }
}

fn datatype_name(dt: TRITONSERVER_DataType) -> &'static str {
    const NAMES: [&str; 15] = [
        "INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
        "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16",
    ];
    NAMES.get(dt as usize).copied().unwrap_or("UNKNOWN")
}

fn parse_request(model: &ModelState, request: *mut TRITONBACKEND_Request) -> Res<Parsed> {
    let sig = &model.method.sig;
    let (input_name, dims) = &sig.input;
    let mut count = 0u32;
    // SAFETY: the request is live; out-pointers to locals; strings owned by the request.
    check(
        unsafe { TRITONBACKEND_RequestInputCount(request, &mut count) },
        "TRITONBACKEND_RequestInputCount",
    )?;
    if count != 1 {
        return Err(Failure::invalid(format!(
            "{}: {} takes one input `{input_name}`; the request has {count}",
            model.name, sig.method
        )));
    }
    let c_name = CString::new(input_name.as_str()).unwrap_or_default();
    let mut input = std::ptr::null_mut();
    let got = check(
        unsafe { TRITONBACKEND_RequestInput(request, c_name.as_ptr(), &mut input) },
        "TRITONBACKEND_RequestInput",
    );
    if got.is_err() || input.is_null() {
        let mut other = std::ptr::null();
        let _ = check(
            unsafe { TRITONBACKEND_RequestInputName(request, 0, &mut other) },
            "TRITONBACKEND_RequestInputName",
        );
        return Err(Failure::invalid(format!(
            "{}: the request has no input `{input_name}` (it has `{}`)",
            model.name,
            unsafe { cstr(other) }
        )));
    }
    let (mut dtype, mut shape, mut ndims, mut bytes, mut buffers) =
        (0, std::ptr::null(), 0u32, 0u64, 0u32);
    check(
        unsafe {
            TRITONBACKEND_InputProperties(
                input,
                std::ptr::null_mut(),
                &mut dtype,
                &mut shape,
                &mut ndims,
                &mut bytes,
                &mut buffers,
            )
        },
        "TRITONBACKEND_InputProperties",
    )?;
    if dtype != TRITONSERVER_TYPE_FP32 {
        return Err(Failure::invalid(format!(
            "{}: input `{input_name}` has datatype {}; the model takes FP32",
            model.name,
            datatype_name(dtype)
        )));
    }
    let shape: Vec<i64> = if shape.is_null() {
        Vec::new()
    } else {
        // SAFETY: Triton gives `ndims` values at `shape`, alive with the input.
        unsafe { std::slice::from_raw_parts(shape, ndims as usize) }.to_vec()
    };
    let want: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    let max = model.served.max_batch_size as i64;
    let ok =
        shape.len() == want.len() + 1 && shape[1..] == want[..] && (1..=max).contains(&shape[0]);
    if !ok {
        return Err(Failure::invalid(format!(
            "{}: input `{input_name}` has shape {shape:?}; the model takes [b, {}] with \
             1 <= b <= {max}",
            model.name,
            want.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let items = shape[0] as usize;
    let n = items * model.method.input_row();
    if bytes != (n * 4) as u64 {
        return Err(Failure::invalid(format!(
            "{}: input `{input_name}` holds {bytes} bytes; shape {shape:?} of FP32 needs {}",
            model.name,
            n * 4
        )));
    }
    let mut data = vec![0f32; n];
    // SAFETY: a byte view of `data`, which has exactly `bytes` bytes.
    let dst = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, n * 4) };
    let mut at = 0usize;
    for b in 0..buffers {
        let (mut ptr, mut size, mut mem, mut mem_id) =
            (std::ptr::null(), 0u64, TRITONSERVER_MEMORY_CPU, 0i64);
        check(
            unsafe {
                TRITONBACKEND_InputBuffer(input, b, &mut ptr, &mut size, &mut mem, &mut mem_id)
            },
            "TRITONBACKEND_InputBuffer",
        )?;
        if mem != TRITONSERVER_MEMORY_CPU && mem != TRITONSERVER_MEMORY_CPU_PINNED {
            return Err(Failure::unsupported(format!(
                "{}: input `{input_name}` is in GPU memory; the rbln backend reads host memory",
                model.name
            )));
        }
        let size = size as usize;
        if at + size > dst.len() || (ptr.is_null() && size > 0) {
            return Err(Failure::invalid(format!(
                "{}: input `{input_name}` buffers hold more than its {} bytes",
                model.name,
                dst.len()
            )));
        }
        if size > 0 {
            // SAFETY: Triton gives `size` readable bytes at `ptr`.
            dst[at..at + size]
                .copy_from_slice(unsafe { std::slice::from_raw_parts(ptr as *const u8, size) });
        }
        at += size;
    }
    if at != dst.len() {
        return Err(Failure::invalid(format!(
            "{}: input `{input_name}` buffers hold {at} bytes, expected {}",
            model.name,
            dst.len()
        )));
    }
    let mut outs = 0u32;
    check(
        unsafe { TRITONBACKEND_RequestOutputCount(request, &mut outs) },
        "TRITONBACKEND_RequestOutputCount",
    )?;
    let mut outputs = Vec::new();
    for o in 0..outs {
        let mut name = std::ptr::null();
        check(
            unsafe { TRITONBACKEND_RequestOutputName(request, o, &mut name) },
            "TRITONBACKEND_RequestOutputName",
        )?;
        let name = unsafe { cstr(name) };
        let idx = sig
            .outputs
            .iter()
            .position(|(n, _)| *n == name)
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "{}: {} has no output `{name}` (it has: {})",
                    model.name,
                    sig.method,
                    model.served.outputs.join(", ")
                ))
            })?;
        outputs.push(idx);
    }
    Ok(Parsed {
        items,
        data,
        outputs,
    })
}

/// Builds and sends the response of one request (its rows of each requested output), or an
/// error response if that fails; true if the outputs were sent.
fn respond(
    model: &ModelState,
    request: *mut TRITONBACKEND_Request,
    parsed: &Parsed,
    rows: &[&[f32]],
) -> bool {
    let mut response = std::ptr::null_mut();
    // SAFETY: the request is live and ours.
    let made = check(
        unsafe { TRITONBACKEND_ResponseNew(&mut response, request) },
        "TRITONBACKEND_ResponseNew",
    );
    if let Err(e) = made {
        log(
            TRITONSERVER_LOG_ERROR,
            &format!("model \"{}\": {}", model.name, e.msg),
        );
        return false;
    }
    match fill(model, response, parsed, rows) {
        Ok(()) => send(response, None),
        Err(f) => {
            send(
                response,
                Some(f.context(format!("rbln backend: model \"{}\"", model.name))),
            );
            false
        }
    }
}

fn fill(
    model: &ModelState,
    response: *mut TRITONBACKEND_Response,
    parsed: &Parsed,
    rows: &[&[f32]],
) -> Res<()> {
    let sig = &model.method.sig;
    for (&o, data) in parsed.outputs.iter().zip(rows) {
        let (name, dims) = &sig.outputs[o];
        let mut shape = vec![parsed.items as i64];
        shape.extend(dims.iter().map(|&d| d as i64));
        let c_name = CString::new(name.as_str()).unwrap_or_default();
        let mut output = std::ptr::null_mut();
        // SAFETY: response is live; name and shape outlive the call (Triton copies them).
        check(
            unsafe {
                TRITONBACKEND_ResponseOutput(
                    response,
                    &mut output,
                    c_name.as_ptr(),
                    TRITONSERVER_TYPE_FP32,
                    shape.as_ptr(),
                    shape.len() as u32,
                )
            },
            "TRITONBACKEND_ResponseOutput",
        )?;
        let bytes = std::mem::size_of_val(*data);
        let (mut buf, mut mem, mut mem_id) = (std::ptr::null_mut(), TRITONSERVER_MEMORY_CPU, 0i64);
        check(
            unsafe {
                TRITONBACKEND_OutputBuffer(output, &mut buf, bytes as u64, &mut mem, &mut mem_id)
            },
            "TRITONBACKEND_OutputBuffer",
        )?;
        if mem != TRITONSERVER_MEMORY_CPU && mem != TRITONSERVER_MEMORY_CPU_PINNED {
            return Err(Failure::unsupported(format!(
                "{}: output `{name}` was given GPU memory; the rbln backend writes host memory",
                model.name
            )));
        }
        if bytes > 0 {
            if buf.is_null() {
                return Err(Failure::internal(format!(
                    "{}: Triton gave no buffer for output `{name}`",
                    model.name
                )));
            }
            // SAFETY: Triton allocated `bytes` writable bytes at `buf`; data has `bytes` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr() as *const u8, buf as *mut u8, bytes)
            };
        }
    }
    Ok(())
}
