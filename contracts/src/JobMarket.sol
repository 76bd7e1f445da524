// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IJobConsumer} from "./interfaces/IJobConsumer.sol";
import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";
import {IProviderStatusSink} from "./interfaces/IProviderStatusSink.sol";

/// @title JobMarket
/// @notice The job contract and the escrow of gpunode, with two payment paths:
///  - on-chain jobs for dApps: requestJob (escrow) -> claimJob -> submitResult (EIP-712 signed
///    receipt, relayable by anyone, optional consumer callback) -> challenge window -> finalize
///    (pull payment); refund after the deadline when no result came;
///  - vouchers for high volume: a client deposits, reserves part of its deposit for each provider
///    it pays (`reserve`), and signs cumulative EIP-712 vouchers per provider; a provider redeems
///    many clients' latest vouchers in one call, each paid only out of the reserve for that provider.
///    A reserve shrinks only by redemptions or by a release the client requested `withdrawalDelay`
///    earlier, so a provider that reads `reserveOf` before running a job knows the money behind the
///    voucher is its alone. The unreserved deposit is withdrawn the same two-step way.
/// A provider that signs two different receipts for one job is slashed on proof (`proveEquivocation`);
/// one that lets a claimed job run out of time loses stake worth the job's price (`refund`). No
/// deadline is further than `maxJobTime` ahead, and `maxJobTime` plus the challenge window is the
/// registry's unstake cooldown: a provider's stake stays put until every job it claimed while
/// active is past its deadline and challenge window.
/// @dev Gas: a job is one storage slot keyed by its id. The id is the hash of the job's immutable
/// terms (`JobTerms`), which `submitResult` and `refund` take back in calldata; the slot packs
/// status (bits 0-3), whether the output must be delivered on chain (bit 4), provider (bits 8-167),
/// a time (bits 168-199: the deadline until a result is submitted, then the end of the challenge
/// window), the callback gas in thousands (bits 200-215) and the price in gwei (bits 216-255), so
/// `claimJob` and `finalize` need only the id. Prices are therefore whole gwei. A settled job's slot
/// is cleared, which refunds most of what finalizing costs. Providers' active status is a copy
/// pushed by the registry on every change (`setProviderActive`), so claiming calls no other contract.
/// Section order: types, events, errors, constants/immutables, storage, constructor, modifiers,
/// external functions, views, internal functions.
contract JobMarket is IProviderStatusSink {
    // ------------------------------------------------------------------ types

    enum JobStatus {
        None,
        Requested,
        Claimed,
        Submitted,
        Disputed,
        Challenged
    }

    /// @notice A dispute's outcome, as `DisputeCourt.Verdict`.
    enum Verdict {
        Pending,
        ProviderWrong,
        ProviderRight,
        Undecided
    }

    /// @notice Why `redeemVouchers` skipped a voucher instead of paying it.
    enum SkipReason {
        BadSignature,
        AlreadyPaid,
        NoFunds
    }

    /// @notice A job's immutable terms; `keccak256(abi.encode(terms))` is the job id. The price is
    /// kept in the job's slot instead. `salt` is the requester's: any value that sets this job apart
    /// from its other jobs with the same model, input and callback.
    struct JobTerms {
        address requester;
        bytes32 modelId;
        bytes32 inputHash;
        address callback;
        uint256 salt;
    }

    /// @notice EIP-712 `ResultReceipt`, signed by the provider that ran the job.
    struct ResultReceipt {
        bytes32 jobId;
        bytes32 modelId;
        bytes32 inputHash;
        bytes32 outputHash;
        bytes32 profileHash;
        address provider;
    }

    /// @notice EIP-712 `Voucher`: the cumulative amount `client` owes `provider`.
    struct Voucher {
        address client;
        address provider;
        uint256 cumulativeAmount;
    }

    /// @notice A voucher as passed to `redeemVouchers`; its provider is the caller.
    struct SignedVoucher {
        address client;
        uint256 cumulativeAmount;
        bytes signature;
    }

    /// @dev One slot per client: its deposit not reserved for any provider, and a withdrawal request.
    struct ClientAccount {
        uint128 balance;
        uint88 withdrawalAmount;
        uint40 withdrawableAt;
    }

    /// @dev What `client` set aside for one provider: `amount` is still unpaid, `paid` went out
    /// through vouchers (cumulative). One slot, so a redemption reads and writes once.
    struct Reserve {
        uint128 amount;
        uint128 paid;
    }

    /// @dev A client's pending release of (part of) a reserve back to its deposit.
    struct Release {
        uint128 amount;
        uint64 releasableAt;
    }

    // ------------------------------------------------------------------ events

    /// @dev Carries every field of the job's `JobTerms`, so providers can rebuild them. The input
    /// bytes, when given, follow in `JobInput`, and how the result is delivered in `JobDelivery`:
    /// jobs published by hash with no callback pay nothing for either.
    event JobRequested(
        bytes32 indexed jobId,
        address indexed requester,
        address indexed provider,
        bytes32 modelId,
        bytes32 inputHash,
        address callback,
        uint256 salt,
        uint256 price,
        uint256 deadline
    );
    event JobInput(bytes32 indexed jobId, bytes input);
    /// @dev Follows `JobRequested` only for jobs with a callback or an output required on chain;
    /// without one, a job's callback gas is zero and its output is fetched by hash.
    event JobDelivery(bytes32 indexed jobId, uint256 callbackGas, bool outputOnChain);
    event ProviderStatusChanged(address indexed provider, bool active);
    event JobClaimed(bytes32 indexed jobId, address indexed provider);
    /// @dev The provider is the one in `JobClaimed`; the job can be finalized `challengeWindow`
    /// seconds after the log's block timestamp. Output bytes, when given, follow in `ResultOutput`.
    event ResultSubmitted(bytes32 indexed jobId, bytes32 outputHash, bytes32 profileHash);
    event ResultOutput(bytes32 indexed jobId, bytes output);
    event CallbackFailed(bytes32 indexed jobId, address indexed callback);
    event JobFinalized(bytes32 indexed jobId, address indexed provider, uint256 price);
    event JobRefunded(bytes32 indexed jobId, address indexed requester, uint256 price);
    event JobDisputed(bytes32 indexed jobId, address indexed provider);
    /// @dev The DisputeCourt holds the job until its jury decides: never finalized meanwhile.
    event JobChallenged(bytes32 indexed jobId, address indexed provider);
    /// @dev The jury found the provider right: the job can be finalized again.
    event ChallengeRejected(bytes32 indexed jobId, address indexed provider);
    /// @dev A claimed job ran out of time without a result: its claimer lost `slashed` stake.
    event ClaimExpired(bytes32 indexed jobId, address indexed provider, uint256 slashed);
    event EarningsWithdrawn(address indexed account, uint256 amount);
    event Deposited(address indexed client, uint256 amount, uint256 balance);
    event WithdrawalRequested(address indexed client, uint256 amount, uint256 withdrawableAt);
    event Withdrawn(address indexed client, uint256 amount);
    event Reserved(address indexed client, address indexed provider, uint256 amount, uint256 reserve);
    event ReleaseRequested(
        address indexed client, address indexed provider, uint256 amount, uint256 releasableAt
    );
    event Released(address indexed client, address indexed provider, uint256 amount, uint256 reserve);
    event VoucherRedeemed(
        address indexed client, address indexed provider, uint256 amount, uint256 totalPaid, uint256 cumulativeAmount
    );
    event VoucherSkipped(
        address indexed client, address indexed provider, uint256 cumulativeAmount, SkipReason reason
    );
    event EquivocationProven(
        bytes32 indexed jobId, address indexed provider, address indexed reporter, uint256 slashed
    );
    event ProofCommitted(bytes32 indexed commitment, address indexed reporter);

    // ------------------------------------------------------------------ errors

    error ZeroAddress();
    error ZeroAmount();
    error InvalidChallengeWindow(uint256 challengeWindow);
    error InvalidWithdrawalDelay(uint256 withdrawalDelay);
    error InvalidCallbackGasLimit(uint256 callbackGasLimit);
    error DeadlineNotInFuture(uint256 deadline, uint256 now_);
    error DeadlineTooClose(uint256 deadline, uint256 earliest);
    error InvalidCallbackGas(uint256 callbackGas, uint256 maximum);
    error OutputRequired(bytes32 jobId);
    error DeadlineTooFar(uint256 deadline, uint256 latest);
    error CooldownTooShort(uint256 unstakeCooldown, uint256 challengeWindow);
    error PriceNotWholeGwei(uint256 price);
    error PriceTooHigh(uint256 price);
    error MissingInput();
    error InputHashMismatch(bytes32 given, bytes32 computed);
    error CallbackNotContract(address callback);
    error JobExists(bytes32 jobId);
    error JobNotFound(bytes32 jobId);
    error WrongJobStatus(bytes32 jobId, JobStatus status);
    error DeadlinePassed(bytes32 jobId, uint256 deadline);
    error DeadlineNotPassed(bytes32 jobId, uint256 deadline);
    error NotNamedProvider(bytes32 jobId, address named, address caller);
    error NotRequester(bytes32 jobId, address caller);
    error ProviderNotActive(address provider);
    error NotRegistry(address caller);
    error NotCourt(address caller);
    error NotDisputable(bytes32 jobId, JobStatus status, address provider);
    error ChallengeWindowClosed(bytes32 jobId, uint256 finalizeAfter);
    error InsufficientReserve(uint256 requested, uint256 reserve);
    error NoReleaseRequested(address client, address provider);
    error OutputHashMismatch(bytes32 signed, bytes32 computed);
    error InvalidSignature();
    error WrongSigner(address signer, address expected);
    error InsufficientCallbackGas(uint256 available, uint256 needed);
    error ChallengeWindowOpen(bytes32 jobId, uint256 finalizeAfter);
    error NothingToWithdraw(address account);
    error BalanceOverflow(uint256 balance);
    error InsufficientDeposit(uint256 requested, uint256 balance);
    error NoWithdrawalRequested(address client);
    error WithdrawalNotReady(uint256 now_, uint256 withdrawableAt);
    error DifferentJobs(bytes32 jobIdA, bytes32 jobIdB);
    error SameReceipt(bytes32 digest);
    error DifferentProviders(address providerA, address providerB);
    error DifferentTasks(bytes32 jobId);
    error AlreadyProven(bytes32 jobId, address provider);
    error TransferFailed(address to, uint256 amount);
    error Reentrancy();

    // ------------------------------------------------------------------ constants and immutables

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "ResultReceipt(bytes32 jobId,bytes32 modelId,bytes32 inputHash,bytes32 outputHash,bytes32 profileHash,address provider)"
    );
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(address client,address provider,uint256 cumulativeAmount)");
    bytes32 private constant NAME_HASH = keccak256("gpunode");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev secp256k1n / 2: signatures with a larger s are malleable copies and are rejected.
    uint256 private constant HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 private constant STATUS_MASK = 0x0f;
    uint256 private constant OUTPUT_ON_CHAIN = 0x10;
    uint256 private constant PROVIDER_SHIFT = 8;
    uint256 private constant TIME_SHIFT = 168;
    uint256 private constant TIME_MASK = 0xffffffff;
    uint256 private constant KGAS_SHIFT = 200;
    uint256 private constant KGAS_MASK = 0xffff;
    uint256 private constant PRICE_SHIFT = 216;
    uint256 private constant KEPT_MASK = OUTPUT_ON_CHAIN | (type(uint256).max << KGAS_SHIFT);
    uint256 private constant MAX_PRICE_GWEI = (1 << 40) - 1;
    uint256 private constant GWEI = 1 gwei;
    /// @notice Bounds of the constructor's parameters.
    uint256 public constant MIN_CHALLENGE_WINDOW = 1 minutes;
    uint256 public constant MAX_CHALLENGE_WINDOW = 365 days;
    uint256 public constant MIN_WITHDRAWAL_DELAY = 1 minutes;
    uint256 public constant MAX_WITHDRAWAL_DELAY = 90 days;
    uint256 public constant MIN_CALLBACK_GAS_LIMIT = 10_000;
    uint256 public constant MAX_CALLBACK_GAS_LIMIT = 10_000_000;
    /// @notice The least time a new job's deadline leaves for claiming, running and submitting.
    uint256 public constant MIN_JOB_TIME = 30 seconds;
    // Gas the callback call itself costs on top of what it forwards: cold account access and margin.
    uint256 private constant CALLBACK_OVERHEAD = 5_000;

    IProviderRegistry public immutable registry;
    /// @notice Seconds after a result is submitted before the job can be finalized.
    uint256 public immutable challengeWindow;
    /// @notice Seconds between a client's `requestWithdrawal` and `withdraw`, and between
    /// `requestRelease` and `release` of a reserve.
    uint256 public immutable withdrawalDelay;
    /// @notice The most callback gas a job may ask for (each job names its own, `callbackGas`).
    uint256 public immutable callbackGasLimit;
    /// @notice The furthest ahead a job's deadline may be: the registry's unstake cooldown less the
    /// challenge window, so a claimed job settles before its claimer's stake can leave.
    uint256 public immutable maxJobTime;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    // ------------------------------------------------------------------ storage

    mapping(bytes32 jobId => uint256 packed) private _jobs;
    /// @notice Wei each account can take out with `withdrawEarnings`: earnings, refunds and rewards.
    mapping(address account => uint256 amount) public withdrawable;
    /// @notice Copy of `registry.isActive(provider)`, written only by the registry.
    mapping(address provider => bool active) public providerActive;
    mapping(address client => ClientAccount) private _accounts;
    mapping(address client => mapping(address provider => Reserve)) private _reserves;
    mapping(address client => mapping(address provider => Release)) private _releases;
    mapping(bytes32 key => bool proven) private _equivocations;
    /// @dev Block in which each proof commitment was first made.
    mapping(bytes32 commitment => uint256 blockNumber) private _commitments;
    /// @notice Rewards nobody may earn, locked for good: those of proofs whose sender had not
    /// committed to them first (copying a proof seen in the mempool earns nothing), and the share of
    /// an expired claim's slashed stake (a requester must not profit from a claim running out).
    uint256 public unclaimedRewards;
    /// @notice When each provider last redeemed vouchers that paid something: jobs paid by vouchers
    /// can be disputed for the court's voucher window after it, and the stake stays until then.
    mapping(address provider => uint256 timestamp) public lastRedeemedAt;
    bool private transient _locked;

    // ------------------------------------------------------------------ constructor

    /// @param registry_ The ProviderRegistry whose active providers may claim jobs.
    /// @param challengeWindow_ Seconds between a result and finalization; 1 minute to 365 days, and
    /// at least `MIN_JOB_TIME` shorter than the registry's unstake cooldown.
    /// @param withdrawalDelay_ Seconds a client waits between requesting and making a withdrawal or
    /// a release; 1 minute to 90 days, so providers always have time to redeem first.
    /// @param callbackGasLimit_ The most gas a job may ask for its consumer callback; 10k to 10M.
    constructor(
        IProviderRegistry registry_,
        uint256 challengeWindow_,
        uint256 withdrawalDelay_,
        uint256 callbackGasLimit_
    ) {
        if (address(registry_) == address(0)) revert ZeroAddress();
        if (challengeWindow_ < MIN_CHALLENGE_WINDOW || challengeWindow_ > MAX_CHALLENGE_WINDOW) {
            revert InvalidChallengeWindow(challengeWindow_);
        }
        if (withdrawalDelay_ < MIN_WITHDRAWAL_DELAY || withdrawalDelay_ > MAX_WITHDRAWAL_DELAY) {
            revert InvalidWithdrawalDelay(withdrawalDelay_);
        }
        if (callbackGasLimit_ < MIN_CALLBACK_GAS_LIMIT || callbackGasLimit_ > MAX_CALLBACK_GAS_LIMIT) {
            revert InvalidCallbackGasLimit(callbackGasLimit_);
        }
        uint256 cooldown = registry_.unstakeCooldown();
        if (cooldown < challengeWindow_ + MIN_JOB_TIME) revert CooldownTooShort(cooldown, challengeWindow_);
        maxJobTime = cooldown - challengeWindow_;
        registry = registry_;
        challengeWindow = challengeWindow_;
        withdrawalDelay = withdrawalDelay_;
        callbackGasLimit = callbackGasLimit_;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    // ------------------------------------------------------------------ modifiers

    modifier nonReentrant() {
        if (_locked) revert Reentrancy();
        _locked = true;
        _;
        _locked = false;
    }

    // ------------------------------------------------------------------ external: on-chain jobs

    /// @notice Accepts the reward share of a slashed stake, which `registry.slash` sends here to be
    /// credited to whoever proved the fault.
    receive() external payable {
        if (msg.sender != address(registry)) revert NotRegistry(msg.sender);
    }

    /// @notice Requests a job, escrowing `msg.value` (a whole number of gwei) as its price. The
    /// price also pays for the callback: the provider that submits the result spends `callbackGas`.
    /// @param modelId The model to run.
    /// @param inputHash sha256 of the input; may be zero when `input` is given.
    /// @param input The input bytes, or empty when only `inputHash` is published.
    /// @param deadline Unix time by which a result must be submitted, at least `MIN_JOB_TIME` and at
    /// most `maxJobTime` from now; later, `refund` applies.
    /// @param provider The only provider allowed to claim, or zero for any active provider.
    /// @param callback An IJobConsumer to receive the result, or zero.
    /// @param callbackGas Gas the callback gets (rounded up to a thousand): zero without a callback,
    /// else 1 to `callbackGasLimit`.
    /// @param outputOnChain Whether the result must carry the output bytes (then in `ResultOutput`
    /// and the callback); without it, the output is fetched from the provider by its hash.
    /// @param salt Sets this job apart from the caller's other jobs with the same model, input and
    /// callback (a counter or a random number); a live job with the same terms makes this revert
    /// `JobExists`. Never reuse one: a settled job's id would recur, and receipts with it.
    /// @return jobId The job's id, `keccak256(abi.encode(terms))` (see `JobRequested`).
    function requestJob(
        bytes32 modelId,
        bytes32 inputHash,
        bytes calldata input,
        uint256 deadline,
        address provider,
        address callback,
        uint256 callbackGas,
        bool outputOnChain,
        uint256 salt
    ) external payable returns (bytes32 jobId) {
        if (msg.value == 0) revert ZeroAmount();
        if (msg.value % GWEI != 0) revert PriceNotWholeGwei(msg.value);
        if (msg.value / GWEI > MAX_PRICE_GWEI) revert PriceTooHigh(msg.value);
        if (deadline < block.timestamp + MIN_JOB_TIME) revert DeadlineTooClose(deadline, block.timestamp + MIN_JOB_TIME);
        if (deadline > block.timestamp + maxJobTime) revert DeadlineTooFar(deadline, block.timestamp + maxJobTime);
        inputHash = _checkedInputHash(inputHash, input);
        uint256 kgas = _checkedCallbackKgas(callback, callbackGas);
        jobId = keccak256(abi.encode(JobTerms(msg.sender, modelId, inputHash, callback, salt)));
        if (_jobs[jobId] != 0) revert JobExists(jobId);
        _jobs[jobId] = _pack(JobStatus.Requested, provider, deadline, msg.value / GWEI)
            | (kgas << KGAS_SHIFT) | (outputOnChain ? OUTPUT_ON_CHAIN : 0);
        emit JobRequested(jobId, msg.sender, provider, modelId, inputHash, callback, salt, msg.value, deadline);
        if (input.length != 0) emit JobInput(jobId, input);
        if (kgas != 0 || outputOnChain) emit JobDelivery(jobId, kgas * 1000, outputOnChain);
    }

    /// @notice Claims a requested job for the caller, who must be an active provider (and the named
    /// one, if the requester named one). A claim costs stake worth the price if no result comes by
    /// the deadline (see `refund`).
    /// @param jobId The job.
    function claimJob(bytes32 jobId) external {
        uint256 packed = _jobs[jobId];
        _expectStatus(jobId, packed, JobStatus.Requested);
        uint256 deadline = _time(packed);
        if (block.timestamp > deadline) revert DeadlinePassed(jobId, deadline);
        address named = _provider(packed);
        if (named != address(0) && named != msg.sender) revert NotNamedProvider(jobId, named, msg.sender);
        if (!providerActive[msg.sender]) revert ProviderNotActive(msg.sender);
        _jobs[jobId] = _restate(packed, JobStatus.Claimed, msg.sender, deadline);
        emit JobClaimed(jobId, msg.sender);
    }

    /// @notice Submits the result of a claimed job with the provider's EIP-712 `ResultReceipt`
    /// signature; anyone may relay it. Starts the challenge window, then calls the consumer back.
    /// A relayer can change nothing the provider signed; the output bytes are checked against the
    /// signed hash and are required when the job asked for them on chain.
    /// @param terms The job's terms, as emitted in `JobRequested`.
    /// @param outputHash sha256 of the output.
    /// @param profileHash Commitment to the execution profile.
    /// @param signature The provider's 65-byte `r || s || v` signature over the receipt.
    /// @param output The output bytes (checked against `outputHash`), or empty.
    function submitResult(
        JobTerms calldata terms,
        bytes32 outputHash,
        bytes32 profileHash,
        bytes calldata signature,
        bytes calldata output
    ) external {
        bytes32 jobId = keccak256(abi.encode(terms));
        uint256 packed = _jobs[jobId];
        _expectStatus(jobId, packed, JobStatus.Claimed);
        uint256 deadline = _time(packed);
        if (block.timestamp > deadline) revert DeadlinePassed(jobId, deadline);
        if (output.length != 0) {
            bytes32 computed = sha256(output);
            if (computed != outputHash) revert OutputHashMismatch(outputHash, computed);
        } else if (packed & OUTPUT_ON_CHAIN != 0) {
            revert OutputRequired(jobId);
        }
        address provider = _provider(packed);
        bytes32 digest = _hashTypedData(
            keccak256(
                abi.encode(
                    RECEIPT_TYPEHASH, jobId, terms.modelId, terms.inputHash, outputHash, profileHash, provider
                )
            )
        );
        address signer = _recoverStrict(digest, signature);
        if (signer != provider) revert WrongSigner(signer, provider);
        uint256 finalizeAfter = block.timestamp + challengeWindow;
        _jobs[jobId] = _restate(packed, JobStatus.Submitted, provider, finalizeAfter);
        emit ResultSubmitted(jobId, outputHash, profileHash);
        if (output.length != 0) emit ResultOutput(jobId, output);
        if (terms.callback != address(0)) {
            _deliver(jobId, terms.callback, ((packed >> KGAS_SHIFT) & KGAS_MASK) * 1000, outputHash, output);
        }
    }

    /// @notice Ends a job whose challenge window is over, crediting its price to the provider
    /// (taken out with `withdrawEarnings`). Anyone may call it.
    /// @param jobId The job.
    function finalize(bytes32 jobId) external {
        uint256 packed = _jobs[jobId];
        _expectStatus(jobId, packed, JobStatus.Submitted);
        uint256 finalizeAfter = _time(packed);
        if (block.timestamp < finalizeAfter) revert ChallengeWindowOpen(jobId, finalizeAfter);
        address provider = _provider(packed);
        uint256 price = _price(packed);
        delete _jobs[jobId];
        withdrawable[provider] += price;
        emit JobFinalized(jobId, provider, price);
    }

    /// @notice Returns a job's price to its requester (via `withdrawEarnings`) when no result came
    /// by the deadline, or at once when the provider was proven to equivocate. Anyone may call it.
    /// A provider that claimed the job and let it run out of time loses stake worth the price (capped
    /// at its stake), none of it to the requester: a requester that profited from a claim running out
    /// would profit from making it run out (an input the model refuses, a callback that cannot run).
    /// @param terms The job's terms.
    function refund(JobTerms calldata terms) external nonReentrant {
        bytes32 jobId = keccak256(abi.encode(terms));
        uint256 packed = _jobs[jobId];
        JobStatus status = JobStatus(packed & STATUS_MASK);
        if (status == JobStatus.None) revert JobNotFound(jobId);
        if (status == JobStatus.Submitted || status == JobStatus.Challenged) revert WrongJobStatus(jobId, status);
        if (status != JobStatus.Disputed) {
            uint256 deadline = _time(packed);
            if (block.timestamp <= deadline) revert DeadlineNotPassed(jobId, deadline);
        }
        uint256 price = _price(packed);
        delete _jobs[jobId];
        withdrawable[terms.requester] += price;
        emit JobRefunded(jobId, terms.requester, price);
        if (status == JobStatus.Claimed) {
            address provider = _provider(packed);
            (uint256 slashed, uint256 reward) = registry.slash(provider, price);
            unclaimedRewards += reward;
            emit ClaimExpired(jobId, provider, slashed);
        }
    }

    /// @notice Takes back a job nobody has claimed: its price is the requester's again at once (via
    /// `withdrawEarnings`). Only the requester may. Once a provider claims the job, only a result or
    /// the deadline ends it; a claim racing a cancel is decided by which lands first.
    /// @param terms The job's terms.
    function cancelJob(JobTerms calldata terms) external {
        bytes32 jobId = keccak256(abi.encode(terms));
        if (msg.sender != terms.requester) revert NotRequester(jobId, msg.sender);
        uint256 packed = _jobs[jobId];
        _expectStatus(jobId, packed, JobStatus.Requested);
        uint256 price = _price(packed);
        delete _jobs[jobId];
        withdrawable[terms.requester] += price;
        emit JobRefunded(jobId, terms.requester, price);
    }

    /// @notice Pays out everything credited to the caller: earnings of finalized jobs, refunds and
    /// rewards for proven faults.
    function withdrawEarnings() external nonReentrant {
        uint256 amount = withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        withdrawable[msg.sender] = 0;
        emit EarningsWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @inheritdoc IProviderStatusSink
    function setProviderActive(address provider, bool active) external {
        if (msg.sender != address(registry)) revert NotRegistry(msg.sender);
        providerActive[provider] = active;
        emit ProviderStatusChanged(provider, active);
    }

    // ------------------------------------------------------------------ external: vouchers

    /// @notice Adds `msg.value` to the caller's deposit, out of which it reserves money for providers.
    function deposit() external payable {
        if (msg.value == 0) revert ZeroAmount();
        _deposit();
    }

    /// @notice Sets `amount` of the caller's deposit (after adding `msg.value` to it) aside for
    /// `provider`: only that provider's vouchers are paid out of it, and it shrinks otherwise only
    /// through `requestRelease` and `withdrawalDelay`.
    /// @param provider The provider the money is reserved for.
    /// @param amount Wei moved from the deposit into the reserve.
    function reserve(address provider, uint256 amount) external payable {
        if (provider == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (msg.value != 0) _deposit();
        ClientAccount storage account = _accounts[msg.sender];
        uint256 balance = account.balance;
        if (amount > balance) revert InsufficientDeposit(amount, balance);
        account.balance = uint128(balance - amount);
        Reserve storage held = _reserves[msg.sender][provider];
        // Cannot overflow: the sum of all reserves and deposits is at most the ether sent here.
        uint256 reserved = held.amount + amount;
        held.amount = uint128(reserved);
        emit Reserved(msg.sender, provider, amount, reserved);
    }

    /// @notice Asks to move `amount` of the caller's reserve for `provider` back to its deposit after
    /// `withdrawalDelay`; replaces any earlier request for that provider and restarts the delay. The
    /// provider can still redeem out of the whole reserve meanwhile (see `reserveOf`).
    /// @param provider The provider whose reserve shrinks.
    /// @param amount Wei to release.
    function requestRelease(address provider, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 reserved = _reserves[msg.sender][provider].amount;
        if (amount > reserved) revert InsufficientReserve(amount, reserved);
        uint256 releasableAt = block.timestamp + withdrawalDelay;
        _releases[msg.sender][provider] = Release(uint128(amount), uint64(releasableAt));
        emit ReleaseRequested(msg.sender, provider, amount, releasableAt);
    }

    /// @notice Moves the requested release (or what is left of the reserve, if the provider
    /// redeemed meanwhile) back to the caller's deposit once the delay is over.
    /// @param provider The provider whose reserve shrinks.
    function release(address provider) external {
        Release memory pending = _releases[msg.sender][provider];
        if (pending.amount == 0) revert NoReleaseRequested(msg.sender, provider);
        if (block.timestamp < pending.releasableAt) revert WithdrawalNotReady(block.timestamp, pending.releasableAt);
        delete _releases[msg.sender][provider];
        Reserve storage held = _reserves[msg.sender][provider];
        uint256 reserved = held.amount;
        uint256 amount = pending.amount < reserved ? pending.amount : reserved;
        held.amount = uint128(reserved - amount);
        ClientAccount storage account = _accounts[msg.sender];
        account.balance = uint128(account.balance + amount);
        emit Released(msg.sender, provider, amount, reserved - amount);
    }

    /// @notice Asks to withdraw `amount` of the caller's deposit after `withdrawalDelay`; replaces
    /// any earlier request and restarts the delay. Providers can still redeem meanwhile.
    /// @param amount Wei to withdraw.
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        ClientAccount storage account = _accounts[msg.sender];
        if (amount > account.balance) revert InsufficientDeposit(amount, account.balance);
        uint256 withdrawableAt = block.timestamp + withdrawalDelay;
        // balance fits in uint128, but the request slot is uint88 (over 3e8 ether).
        if (amount > type(uint88).max) revert BalanceOverflow(amount);
        account.withdrawalAmount = uint88(amount);
        account.withdrawableAt = uint40(withdrawableAt);
        emit WithdrawalRequested(msg.sender, amount, withdrawableAt);
    }

    /// @notice Withdraws the requested amount once the delay is over, or what is left of the deposit
    /// if providers redeemed part of it meanwhile.
    function withdraw() external nonReentrant {
        ClientAccount storage account = _accounts[msg.sender];
        uint256 requested = account.withdrawalAmount;
        if (requested == 0) revert NoWithdrawalRequested(msg.sender);
        if (block.timestamp < account.withdrawableAt) revert WithdrawalNotReady(block.timestamp, account.withdrawableAt);
        uint256 balance = account.balance;
        uint256 amount = requested < balance ? requested : balance;
        account.balance = uint128(balance - amount);
        account.withdrawalAmount = 0;
        account.withdrawableAt = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @notice Redeems the latest vouchers of many clients for the caller (their provider) and pays
    /// the total. Each voucher pays its cumulative amount minus what was already paid, capped at the
    /// client's reserve for the caller (the rest stays redeemable after the client reserves more); a
    /// client's unreserved deposit and its reserves for other providers are never touched. A voucher
    /// with a bad signature, one already paid in full, or one whose reserve is empty is skipped with
    /// a `VoucherSkipped` event, so one bad voucher never reverts the batch.
    /// @param vouchers The vouchers, each signed by its client for `provider = msg.sender`.
    /// @return total Wei paid to the caller.
    function redeemVouchers(SignedVoucher[] calldata vouchers) external nonReentrant returns (uint256 total) {
        for (uint256 i = 0; i < vouchers.length; ++i) {
            total += _redeem(vouchers[i]);
        }
        if (total != 0) lastRedeemedAt[msg.sender] = block.timestamp;
        _send(msg.sender, total);
    }

    // ------------------------------------------------------------------ external: disputes

    /// @notice The DisputeCourt's one call into the market (the registry names the court). With
    /// `verdict` Pending, holds a job whose result is being disputed, so it is not finalized until
    /// the jury decides, and says whether it is an on-chain job: false when the chain has no such job
    /// (one paid by voucher, or one long settled). With a verdict, ends the hold: a provider found
    /// wrong leaves the job `Disputed` (its price goes back to the requester through `refund`); one
    /// found right, or an undecided dispute, lets it be finalized. A job no longer held is left as is.
    /// @param jobId The job the disputed receipt names.
    /// @param provider The provider that signed the receipt.
    /// @param verdict Pending to hold, else the jury's verdict.
    /// @return escrowed Whether the job is (or was) held on chain.
    function challengeHold(bytes32 jobId, address provider, Verdict verdict) external returns (bool escrowed) {
        if (msg.sender != registry.court()) revert NotCourt(msg.sender);
        uint256 packed = _jobs[jobId];
        JobStatus status = JobStatus(packed & STATUS_MASK);
        if (verdict != Verdict.Pending) {
            if (status != JobStatus.Challenged || _provider(packed) != provider) return false;
            bool wrong = verdict == Verdict.ProviderWrong;
            _jobs[jobId] = _restate(packed, wrong ? JobStatus.Disputed : JobStatus.Submitted, provider, wrong ? 0 : _time(packed));
            if (wrong) emit JobDisputed(jobId, provider);
            else emit ChallengeRejected(jobId, provider);
            return true;
        }
        if (status == JobStatus.None) return false;
        if (status != JobStatus.Submitted || _provider(packed) != provider) {
            revert NotDisputable(jobId, status, provider);
        }
        uint256 finalizeAfter = _time(packed);
        if (block.timestamp >= finalizeAfter) revert ChallengeWindowClosed(jobId, finalizeAfter);
        _jobs[jobId] = _restate(packed, JobStatus.Challenged, provider, finalizeAfter);
        emit JobChallenged(jobId, provider);
        return true;
    }

    /// @notice Commits to a proof before sending it, so nobody can take its reward by copying it:
    /// `commitment` is `proofCommitment(reporter, a, b)`; the proof earns its reward only when sent
    /// by `reporter` in a later block.
    /// @param commitment The commitment.
    function commitProof(bytes32 commitment) external {
        if (_commitments[commitment] != 0) return;
        _commitments[commitment] = block.number;
        emit ProofCommitted(commitment, msg.sender);
    }

    /// @notice Proves that a provider signed two different results for the same task (job id, model
    /// and input): disputes the on-chain job if that provider holds it (claimed, or submitted and not
    /// finalized), so it is never paid and its requester can be refunded at once, and slashes the
    /// provider's whole stake. Half of it is credited to the caller (taken out with
    /// `withdrawEarnings`) if the caller committed to this proof in an earlier block (`commitProof`),
    /// else locked for good. The dispute stands even when no stake is left to slash.
    /// @param a The first receipt.
    /// @param sigA The provider's signature over `a`.
    /// @param b The second receipt: same job, model, input and provider, different output or profile.
    /// @param sigB The provider's signature over `b`.
    function proveEquivocation(
        ResultReceipt calldata a,
        bytes calldata sigA,
        ResultReceipt calldata b,
        bytes calldata sigB
    ) external nonReentrant {
        if (a.jobId != b.jobId) revert DifferentJobs(a.jobId, b.jobId);
        if (a.provider != b.provider) revert DifferentProviders(a.provider, b.provider);
        // Receipts for different inputs under one id are a client reusing an id, not a provider lying.
        if (a.modelId != b.modelId || a.inputHash != b.inputHash) revert DifferentTasks(a.jobId);
        bytes32 digestA = receiptDigest(a);
        bytes32 digestB = receiptDigest(b);
        if (digestA == digestB) revert SameReceipt(digestA);
        address signerA = _recoverStrict(digestA, sigA);
        if (signerA != a.provider) revert WrongSigner(signerA, a.provider);
        address signerB = _recoverStrict(digestB, sigB);
        if (signerB != b.provider) revert WrongSigner(signerB, b.provider);
        bytes32 key = keccak256(abi.encode(a.jobId, a.provider));
        if (_equivocations[key]) revert AlreadyProven(a.jobId, a.provider);
        _equivocations[key] = true;
        _disputeIfPending(a.jobId, a.provider);
        (uint256 slashed, uint256 reward) = registry.slash(a.provider, type(uint256).max);
        uint256 committedAt = _commitments[_proofCommitment(msg.sender, digestA, digestB)];
        if (committedAt != 0 && committedAt < block.number) {
            withdrawable[msg.sender] += reward;
        } else {
            unclaimedRewards += reward;
        }
        emit EquivocationProven(a.jobId, a.provider, msg.sender, slashed);
    }

    // ------------------------------------------------------------------ views

    /// @notice A live job's status, its provider (named or claiming), its time (the deadline until a
    /// result is submitted, then the end of the challenge window), price, the gas its callback gets
    /// and whether its result must carry the output. Settled jobs read as `None`.
    function job(bytes32 jobId)
        external
        view
        returns (
            JobStatus status,
            address provider,
            uint256 time,
            uint256 price,
            uint256 callbackGas,
            bool outputOnChain
        )
    {
        uint256 packed = _jobs[jobId];
        return (
            JobStatus(packed & STATUS_MASK),
            _provider(packed),
            _time(packed),
            _price(packed),
            ((packed >> KGAS_SHIFT) & KGAS_MASK) * 1000,
            packed & OUTPUT_ON_CHAIN != 0
        );
    }

    /// @notice The id of a job with these terms.
    function jobIdOf(JobTerms calldata terms) external pure returns (bytes32) {
        return keccak256(abi.encode(terms));
    }

    /// @notice Wei already paid from `client` to `provider` through vouchers.
    function paid(address client, address provider) external view returns (uint256) {
        return _reserves[client][provider].paid;
    }

    /// @notice What `client` reserved for `provider`: `amount` not yet paid, of which `releasing`
    /// leaves at `releasableAt` unless redeemed first, and `paid` already redeemed. What a provider
    /// can count on for vouchers it has not redeemed is `amount - releasing`.
    function reserveOf(address client, address provider)
        external
        view
        returns (uint256 amount, uint256 paid_, uint256 releasing, uint256 releasableAt)
    {
        Reserve memory held = _reserves[client][provider];
        Release memory pending = _releases[client][provider];
        return (held.amount, held.paid, pending.amount, pending.releasableAt);
    }

    /// @notice A client's deposit not reserved for any provider, and its pending withdrawal request.
    function clientAccount(address client)
        external
        view
        returns (uint256 balance, uint256 withdrawalAmount, uint256 withdrawableAt)
    {
        ClientAccount memory acc = _accounts[client];
        return (acc.balance, acc.withdrawalAmount, acc.withdrawableAt);
    }

    /// @notice Whether an equivocation of `provider` on `jobId` was already proven.
    function equivocationProven(bytes32 jobId, address provider) external view returns (bool) {
        return _equivocations[keccak256(abi.encode(jobId, provider))];
    }

    /// @notice The EIP-712 domain separator (name "gpunode", version "1", this chain, this contract).
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @notice What `reporter` commits to (`commitProof`) before proving that `a` and `b` equivocate.
    function proofCommitment(address reporter, ResultReceipt calldata a, ResultReceipt calldata b)
        external
        view
        returns (bytes32)
    {
        return _proofCommitment(reporter, receiptDigest(a), receiptDigest(b));
    }

    /// @notice The EIP-712 digest a provider signs for `receipt`.
    function receiptDigest(ResultReceipt calldata receipt) public view returns (bytes32) {
        return _hashTypedData(keccak256(abi.encode(RECEIPT_TYPEHASH, receipt)));
    }

    /// @notice The EIP-712 digest a client signs for `voucher`.
    function voucherDigest(Voucher calldata voucher) public view returns (bytes32) {
        return _hashTypedData(keccak256(abi.encode(VOUCHER_TYPEHASH, voucher)));
    }

    // ------------------------------------------------------------------ internal functions

    function _redeem(SignedVoucher calldata voucher) private returns (uint256 amount) {
        address client = voucher.client;
        uint256 cumulative = voucher.cumulativeAmount;
        bytes32 digest = _hashTypedData(keccak256(abi.encode(VOUCHER_TYPEHASH, client, msg.sender, cumulative)));
        if (client == address(0) || _recover(digest, voucher.signature) != client) {
            emit VoucherSkipped(client, msg.sender, cumulative, SkipReason.BadSignature);
            return 0;
        }
        Reserve storage held = _reserves[client][msg.sender];
        uint256 alreadyPaid = held.paid;
        if (cumulative <= alreadyPaid) {
            emit VoucherSkipped(client, msg.sender, cumulative, SkipReason.AlreadyPaid);
            return 0;
        }
        uint256 reserved = held.amount;
        if (reserved == 0) {
            emit VoucherSkipped(client, msg.sender, cumulative, SkipReason.NoFunds);
            return 0;
        }
        uint256 owed = cumulative - alreadyPaid;
        amount = owed < reserved ? owed : reserved;
        // Both fit 128 bits: paid + amount never exceeds what the client ever reserved.
        held.amount = uint128(reserved - amount);
        held.paid = uint128(alreadyPaid + amount);
        emit VoucherRedeemed(client, msg.sender, amount, alreadyPaid + amount, cumulative);
    }

    function _proofCommitment(address reporter, bytes32 digestA, bytes32 digestB) private pure returns (bytes32) {
        return keccak256(abi.encode(reporter, digestA, digestB));
    }

    function _deposit() private {
        ClientAccount storage account = _accounts[msg.sender];
        uint256 balance = uint256(account.balance) + msg.value;
        if (balance > type(uint128).max) revert BalanceOverflow(balance);
        account.balance = uint128(balance);
        emit Deposited(msg.sender, msg.value, balance);
    }

    function _deliver(bytes32 jobId, address callback, uint256 gasLimit, bytes32 outputHash, bytes calldata output)
        private
    {
        bytes memory data = abi.encodeCall(IJobConsumer.onJobResult, (jobId, outputHash, output));
        // A relayer must not be able to starve the callback (EIP-150 keeps 1/64 back) and have the
        // failure recorded as the consumer's.
        uint256 needed = gasLimit + gasLimit / 63 + CALLBACK_OVERHEAD;
        if (gasleft() < needed) revert InsufficientCallbackGas(gasleft(), needed);
        bool ok;
        // Return data is never copied, so a consumer cannot make the market pay for a huge one.
        assembly ("memory-safe") {
            ok := call(gasLimit, callback, 0, add(data, 0x20), mload(data), 0, 0)
        }
        if (!ok) emit CallbackFailed(jobId, callback);
    }

    function _disputeIfPending(bytes32 jobId, address provider) private {
        uint256 packed = _jobs[jobId];
        JobStatus status = JobStatus(packed & STATUS_MASK);
        bool held = status == JobStatus.Claimed || status == JobStatus.Submitted || status == JobStatus.Challenged;
        if (held && _provider(packed) == provider) {
            _jobs[jobId] = _restate(packed, JobStatus.Disputed, provider, 0);
            emit JobDisputed(jobId, provider);
        }
    }

    function _expectStatus(bytes32 jobId, uint256 packed, JobStatus expected) private pure {
        JobStatus status = JobStatus(packed & STATUS_MASK);
        if (status == JobStatus.None) revert JobNotFound(jobId);
        if (status != expected) revert WrongJobStatus(jobId, status);
    }

    function _pack(JobStatus status, address provider, uint256 time, uint256 priceGwei)
        private
        pure
        returns (uint256)
    {
        return uint256(status) | (uint256(uint160(provider)) << PROVIDER_SHIFT) | (time << TIME_SHIFT)
            | (priceGwei << PRICE_SHIFT);
    }

    /// @dev Keeps the terms bits of `packed` (output flag, callback gas, price), replacing status,
    /// provider and time.
    function _restate(uint256 packed, JobStatus status, address provider, uint256 time)
        private
        pure
        returns (uint256)
    {
        return (packed & KEPT_MASK) | uint256(status) | (uint256(uint160(provider)) << PROVIDER_SHIFT)
            | (time << TIME_SHIFT);
    }

    function _time(uint256 packed) private pure returns (uint256) {
        return (packed >> TIME_SHIFT) & TIME_MASK;
    }

    function _price(uint256 packed) private pure returns (uint256) {
        return (packed >> PRICE_SHIFT) * GWEI;
    }

    function _provider(uint256 packed) private pure returns (address) {
        return address(uint160(packed >> PROVIDER_SHIFT));
    }

    /// @dev The callback gas a job asks for, in thousands of gas (rounded up).
    function _checkedCallbackKgas(address callback, uint256 callbackGas) private view returns (uint256) {
        if (callback == address(0)) {
            if (callbackGas != 0) revert InvalidCallbackGas(callbackGas, 0);
            return 0;
        }
        if (callback.code.length == 0) revert CallbackNotContract(callback);
        if (callbackGas == 0 || callbackGas > callbackGasLimit) revert InvalidCallbackGas(callbackGas, callbackGasLimit);
        return (callbackGas + 999) / 1000;
    }

    function _checkedInputHash(bytes32 inputHash, bytes calldata input) private pure returns (bytes32) {
        if (input.length == 0) {
            if (inputHash == bytes32(0)) revert MissingInput();
            return inputHash;
        }
        bytes32 computed = sha256(input);
        if (inputHash != bytes32(0) && inputHash != computed) revert InputHashMismatch(inputHash, computed);
        return computed;
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function _hashTypedData(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @dev Returns the zero address for any signature that is not 65 bytes, has v outside {27, 28}
    /// or a high s, or does not recover.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v != 27 && v != 28) return address(0);
        if (uint256(s) > HALF_CURVE_ORDER) return address(0);
        return ecrecover(digest, v, r, s);
    }

    function _recoverStrict(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        signer = _recover(digest, signature);
        if (signer == address(0)) revert InvalidSignature();
    }

    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
