// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IJobConsumer} from "../src/interfaces/IJobConsumer.sol";
import {JobMarket} from "../src/JobMarket.sol";

/// @title ExampleConsumer
/// @notice A minimal dApp that asks gpunode providers to run one model on its inputs and keeps the
/// results. Copy it and replace what happens in `onJobResult` with your own logic.
/// @dev The flow:
///  1. `ask` escrows `msg.value` in the JobMarket and names this contract as the callback, with
///     `CALLBACK_GAS` for it and the output required on chain;
///  2. an active provider claims the job, runs it and submits its signed result with the output
///     bytes (the market checks them against the signed hash);
///  3. the market calls `onJobResult` with exactly the callback gas the job asked for. The price pays
///     for it: the provider that submits spends that gas, so a larger `CALLBACK_GAS` needs a price
///     providers accept. If the callback reverts or runs out of gas the market records
///     `CallbackFailed` and the provider is paid anyway; the output is still in `ResultOutput`;
///  4. if no result comes by the deadline, anyone may call `market.refund(terms)`; the price is
///     credited to this contract, and `collectRefunds` moves it to the owner (with half the stake
///     the claimer lost, if a provider claimed the job and let it run out of time).
/// A requester without a contract (a plain account) gets its output the same way without the
/// callback: `requestJob(model, 0, input, deadline, 0, address(0), 0, true, salt)` and the bytes
/// arrive in the market's `ResultOutput` event; or, with `outputOnChain` false, only the signed
/// `outputHash` is on chain and the output is fetched from the provider that submitted it, by that
/// hash, over the overlay's blob protocol (`/gpunode/blob/1`).
contract ExampleConsumer is IJobConsumer {
    event Asked(bytes32 indexed jobId, bytes input);
    event Answered(bytes32 indexed jobId, bytes32 outputHash, bytes output);

    error OnlyMarket(address caller);
    error OnlyOwner(address caller);
    error UnknownJob(bytes32 jobId);
    error TransferFailed(address to, uint256 amount);

    /// @notice Gas asked for each callback: storing a 200-byte output costs about 150k.
    uint256 public constant CALLBACK_GAS = 300_000;

    JobMarket public immutable market;
    bytes32 public immutable modelId;
    address public immutable owner;

    /// @notice Jobs asked for and not answered yet.
    mapping(bytes32 jobId => bool) public pending;
    /// @notice Outputs received, by job.
    mapping(bytes32 jobId => bytes output) public answers;
    /// @dev Counts requests, so asking the same question twice makes two distinct jobs.
    uint256 private _requests;

    /// @param market_ The gpunode JobMarket.
    /// @param modelId_ The model every job of this consumer runs.
    constructor(JobMarket market_, bytes32 modelId_) {
        market = market_;
        modelId = modelId_;
        owner = msg.sender;
    }

    /// @notice Asks for `input` to be run, paying `msg.value`, with a result due by `deadline`.
    /// @return jobId The market's id for the job.
    function ask(bytes calldata input, uint256 deadline) external payable returns (bytes32 jobId) {
        // inputHash 0: the market hashes `input` itself. Provider 0: any active provider may claim.
        // The output is required on chain, so a relayer cannot leave it out of the callback.
        uint256 salt = ++_requests;
        jobId = market.requestJob{value: msg.value}(
            modelId, bytes32(0), input, deadline, address(0), address(this), CALLBACK_GAS, true, salt
        );
        pending[jobId] = true;
        emit Asked(jobId, input);
    }

    /// @inheritdoc IJobConsumer
    function onJobResult(bytes32 jobId, bytes32 outputHash, bytes calldata output) external {
        // Only the market can vouch that a provider signed this output for this job.
        if (msg.sender != address(market)) revert OnlyMarket(msg.sender);
        if (!pending[jobId]) revert UnknownJob(jobId);
        delete pending[jobId];
        answers[jobId] = output;
        emit Answered(jobId, outputHash, output);
    }

    /// @notice Moves refunds credited by the market (jobs that got no result) to the owner.
    function collectRefunds() external {
        if (msg.sender != owner) revert OnlyOwner(msg.sender);
        market.withdrawEarnings();
        uint256 amount = address(this).balance;
        (bool ok,) = owner.call{value: amount}("");
        if (!ok) revert TransferFailed(owner, amount);
    }

    /// @notice Accepts refunds paid out by the market.
    receive() external payable {
        if (msg.sender != address(market)) revert OnlyMarket(msg.sender);
    }
}
